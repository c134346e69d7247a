"""Every fine-tuning method on every task (a tiny model of the family its architecture is tested with, built from
config): it trains (finite loss that falls on a fixed batch, adapter saved in PEFT format and reloaded with identical
outputs) or check refuses it with one line. The docs' compatibility table is methods.compatibility_table(), checked
against these cells."""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT, compose

VOCAB, NUM_LABELS = 64, 5


@functools.lru_cache(maxsize=None)
def task_of(task_name):
    """A task object as a run builds it (its config composed as `finetune task=<name>` would)."""
    from pipeline.tasks import task_class

    return task_class(task_name)(compose([f"task={task_name}", "debug=smoke"]))


def family_of(task_name):
    from pipeline.families import REPRESENTATIVE

    return REPRESENTATIVE[task_of(task_name).archs[0]]


def tiny_model(task_name):
    import transformers

    from pipeline.families import get_family, scratch_config_kwargs

    task = task_of(task_name)
    fam = get_family(family_of(task_name))
    kwargs = scratch_config_kwargs(fam, {"hidden_size": 32, "num_layers": 2, "num_heads": 2,
                                         "intermediate_size": 64, "max_positions": 64})
    if task.peft_task_type in ("TOKEN_CLS", "SEQ_CLS"):
        kwargs.update(num_labels=NUM_LABELS)
    config = getattr(transformers, fam.config_class)(vocab_size=VOCAB, **kwargs)
    torch.manual_seed(0)
    return getattr(transformers, task.auto_class).from_config(config)


def fixed_batch(task_name):
    """A fixed batch with the labels the task's model head takes."""
    kind = task_of(task_name).peft_task_type
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (4, 12), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if kind == "TOKEN_CLS":
        batch["labels"] = torch.randint(0, NUM_LABELS, (4, 12), generator=g)
    elif kind == "SEQ_CLS":
        batch["labels"] = torch.randint(0, NUM_LABELS, (4,), generator=g)
    elif kind == "QUESTION_ANS":
        batch["start_positions"] = torch.randint(1, 6, (4,), generator=g)
        batch["end_positions"] = batch["start_positions"] + torch.randint(0, 4, (4,), generator=g)
    elif kind == "CAUSAL_LM":
        batch["labels"] = ids.clone()
    else:
        batch["labels"] = torch.randint(3, VOCAB, (4, 6), generator=g)
    return batch


def scores(output):
    """Every logits tensor of a model output (start / end logits for span models)."""
    return torch.cat([v.flatten() for k, v in output.items() if k.endswith("logits")])


def train_steps(model, task, batch, steps=8, lr=1e-2):
    """The run's glue (callbacks.attach) on a fixed batch: returns the losses."""
    from pipeline.models import peft_glue as callbacks

    trainer = SimpleNamespace(model=model, data_collator=lambda b: dict(b), callback_handler=None,
                              add_callback=lambda cb: extra.append(cb))
    extra = []
    callbacks.attach(trainer, task)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    losses = []
    model.train()
    for step in range(1, steps + 1):
        loss = model(**trainer.data_collator(batch)).loss
        loss.backward()
        opt.step()
        for cb in extra:
            cb.on_optimizer_step(None, SimpleNamespace(global_step=step), None, model=model)
        opt.zero_grad()
        losses.append(loss.item())
    return losses, trainer.data_collator


def method_cells():
    from pipeline.models.methods import METHODS
    from pipeline.tasks import task_classes

    return [(m, t) for m in METHODS for t in task_classes()]


@pytest.mark.parametrize("method,task_name", method_cells())
def test_method_trains_or_is_refused(method, task_name, tmp_path):
    from pipeline.models import peft_glue as callbacks
    from pipeline.models import methods
    from pipeline.models.saved import load_model
    from pipeline.families import get_family

    family, task = family_of(task_name), task_of(task_name)
    refused = methods.refusal(method, task_name)
    if refused:
        assert refused.startswith(f"method={method} with ") and "; use " in refused
        assert "\n" not in refused
        if not methods.load_method(method).get("load_in_4bit"):  # the refusal is needed: peft itself fails
            with pytest.raises((TypeError, ValueError, RuntimeError)):
                model = methods.apply(methods.load_method(method), tiny_model(task_name), get_family(family),
                                      task, total_steps=8)
                model(**fixed_batch(task_name))
        return
    mcfg = methods.load_method(method)
    model = methods.apply(mcfg, tiny_model(task_name), get_family(family), task, total_steps=8, keep_base=True)
    trainable, total = methods.count_parameters(model)
    assert 0 < trainable <= total
    batch = fixed_batch(task_name)
    losses, collate = train_steps(model, task, batch, lr=1e-2 if mcfg.kind != "full" else 1e-3)
    assert all(l == l and abs(l) != float("inf") for l in losses), losses
    assert min(losses[-3:]) < losses[0], (method, task_name, losses)
    if mcfg.kind != "peft":
        return
    model.save_pretrained(tmp_path)
    callbacks.save_base(model, tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and (tmp_path / "adapter_model.safetensors").is_file()
    if task.head_names:  # a new task head is trained and saved with the adapter (modules_to_save)
        from safetensors import safe_open

        with safe_open(tmp_path / "adapter_model.safetensors", "pt") as f:
            assert any(h in k for k in f.keys() for h in task.head_names)
    model.eval()
    reloaded = load_model(tmp_path)
    label_keys = ("labels", "start_positions", "end_positions")  # inference (AdaLoRA adds a loss term w/ labels)
    inputs = {k: v for k, v in batch.items() if k not in label_keys}
    if task.peft_task_type == "SEQ_2_SEQ_LM":
        inputs["decoder_input_ids"] = batch["labels"]
    with torch.no_grad():
        # identical up to float summation order (AdaLoRA saves only the ranks it kept: smaller matmuls)
        torch.testing.assert_close(scores(model(**inputs)), scores(reloaded(**inputs)), atol=1e-5, rtol=0)


def test_every_method_file_is_in_the_matrix():
    from pipeline.models.methods import METHODS

    assert sorted(METHODS) == sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))


def test_refusals_are_one_line_with_advice():
    from pipeline.models import methods

    assert "gradient (activation) checkpointing" in methods.refusal("prefix", "generation",
                                                                    {"gradient_checkpointing": True})
    assert methods.refusal("prefix", "generation") is None
    assert "CUDA" in methods.refusal("qlora", "generation") or "bitsandbytes" in methods.refusal("qlora", "generation")


def test_readme_table_is_the_tested_matrix():
    from pipeline.models.methods import compatibility_table

    assert compatibility_table() in (ROOT / "docs" / "methods.md").read_text(), \
        "docs/methods.md compatibility table is stale: paste `python -m pipeline.models.methods` into it"


def test_method_keys_reach_the_peft_config():
    from pipeline.models import methods
    from pipeline.families import get_family

    cfg = compose(["recipe=bert-ner", "method=lora", "method.r=16", "method.targets=attention+mlp"])
    ner = task_of("ner")
    pc = methods.peft_config(cfg.method, get_family("bert"), ner.peft_task_type, ner.head_names, total_steps=10)
    assert pc.r == 16 and set(pc.target_modules) == {"query", "value", "intermediate.dense", "output.dense"}
    model = methods.apply(compose(["method=lora", "method.targets=all-linear"]).method, tiny_model("ner"),
                          get_family("bert"), ner)
    assert type(model.base_model.model.classifier).__name__ == "ModulesToSaveWrapper"  # trained whole, not LoRA
    assert hasattr(model.base_model.model.bert.encoder.layer[0].output.dense, "lora_A")  # all linear layers
    with pytest.raises(Exception, match="not LoraConfig fields"):
        methods.peft_config(compose(["method=lora", "+method.rank=4"]).method, get_family("bert"),
                            ner.peft_task_type, ner.head_names, 10)


def test_freeze_trains_head_and_last_layers():
    from pipeline.models import methods

    model = methods.freeze(tiny_model("ner"), task_of("ner").head_names, last_layers=1)
    names = {n.split(".")[0] + "." + ".".join(n.split(".")[2:4]) for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("classifier") for n in names)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and "encoder.layer" in n]
    assert trainable and all("encoder.layer.1." in n for n in trainable)


def test_lr_scale_multiplies_trainer_lr():
    from pipeline.stages.resolve import resolve

    cfg = compose(["recipe=bert-ner", "method=lora"])
    scale = cfg.method.lr_scale
    resolved = resolve(resolve(cfg))  # resolving a resolved config changes nothing
    assert scale > 1 and resolved.trainer.learning_rate == pytest.approx(1e-4 * scale)
    assert cfg.trainer.learning_rate == 1e-4  # the composed config is left as it was


def test_refused_before_loading_the_model():
    from pipeline.stages.check import validate
    from pipeline.errors import ConfigError

    for overrides, why in ((["recipe=gpt2-generation", "debug=smoke", "method=qlora"], "QLoRA"),
                           (["recipe=gpt2-generation", "debug=smoke", "method=loha"], "Conv1D"),
                           (["recipe=bert-ner", "debug=smoke", "method=prefix"], "encoder-only"),
                           (["recipe=t5-summarization", "debug=smoke", "method=prefix",
                             "trainer.activation_checkpointing=true"], "checkpointing")):
        with pytest.raises(ConfigError, match=why) as e:
            validate(compose(overrides))
        assert "\n" not in str(e.value) and "; use " in str(e.value)


def test_lora_run_saves_adapter_exports_merged_and_resumes(tmp_path):
    """One pipeline run end to end: PEFT-format adapter in model/, metrics from the adapter model, a merged export
    with equal outputs, and a second run resumed from the first run's checkpoint."""
    import transformers

    from conftest import run_pipeline
    from pipeline.models.saved import load_model, merge

    common = ["recipe=bert-ner", "debug=smoke", "method=lora", "num_samples=0", "data.synthetic.num_train=64"]
    metrics = run_pipeline([*common, "trainer.num_train_epochs=1"], tmp_path / "a")
    model_dir = tmp_path / "a" / "model"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in model_dir.iterdir()}
    assert not (model_dir / "model.safetensors").exists() and metrics["trainable_params"] < metrics["total_params"]
    assert metrics["model_bytes"] == sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())
    assert 0 <= metrics["test_f1"] <= 1 and json.loads((tmp_path / "a" / "log_history.json").read_text())
    assert type(load_model(model_dir)).__name__ == "PeftModelForTokenClassification"

    out, diff = merge(tmp_path / "a")
    merged = transformers.AutoModelForTokenClassification.from_pretrained(out)
    assert diff < 1e-4 and not hasattr(merged, "peft_config")

    checkpoint = sorted((tmp_path / "a" / "checkpoints").glob("checkpoint-*"))[-1]
    resumed = run_pipeline([*common, "trainer.num_train_epochs=2", f"resume={checkpoint}"], tmp_path / "b")
    history = json.loads((tmp_path / "b" / "log_history.json").read_text())
    steps = int(checkpoint.name.split("-")[1])
    assert resumed["epoch"] == 2 and history[-1]["step"] == 2 * steps
    first = json.loads((tmp_path / "a" / "log_history.json").read_text())
    # up to the checkpoint, the history (learning rates of the 1-epoch schedule included) is the first run's
    assert [h for h in history if h["step"] <= steps and "loss" in h] == [h for h in first if "loss" in h]
