"""Any checkpoint by its path: the lecture's architectures (encoder ALBERT, BERT, DistilBERT, ELECTRA, RoBERTa;
decoder CTRL, GPT, GPT-2; encoder-decoder BART, T5, Marian, mBART) and Llama-style decoders, each a tiny random
checkpoint saved the way a download is (config.json, model.safetensors, a fast tokenizer), loaded by path with no
model.family, fine-tuned a few steps full and with LoRA; metrics.json written, the saved model answers
(finetune-predict's Predictor) and a LoRA run merges (finetune-export --merge). Bad checkpoints are refused in one
line before any weights load.

Each checkpoint's tokenizer is the one init=scratch trains (pipeline/models/scratch.py: the type's own tokenizer
class where it trains from nothing, else one of its kind), saved with save_pretrained.
"""

import json

import pytest

from conftest import compose

TEXTS = [f"the old fox number {i} visited Paris and Berlin with Anna on Monday" for i in range(120)] + [
    "Der alte Fuchs besuchte Berlin", "What is the capital? Paris is the capital."]
SIZES = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_positions": 256}
ENCODERS = ("albert", "bert", "distilbert", "electra", "roberta")
DECODERS = ("ctrl", "openai-gpt", "gpt2", "qwen2", "qwen3", "llama", "mistral")
ENCODER_DECODERS = ("bart", "t5", "marian", "mbart")
TASKS = {"encoder": ("ner", "classification", "qa"), "decoder": ("generation",),
         "encoder-decoder": ("summarization", "translation", "generative-qa")}
FAST = ["debug=smoke", "model.init=pretrained", "trainer.max_steps=2", "num_samples=2", "quiet=true",
        "data.synthetic.num_train=32", "data.synthetic.num_validation=8", "data.synthetic.num_test=8",
        "trainer.per_device_train_batch_size=8", "trainer.global_batch_size=8", "trainer.per_device_eval_batch_size=8"]


def save_checkpoint(model_type: str, folder, **config_extra):
    """A tiny random ``model_type`` checkpoint in ``folder``: config + safetensors weights + a fast tokenizer."""
    import transformers

    from pipeline.families import get_family
    from pipeline.models.scratch import build_config, train_tokenizer

    family = get_family(model_type)
    tok = train_tokenizer(family, TEXTS, 300)
    config = build_config(family, tok, SIZES, config_extra)
    auto = {"encoder": transformers.AutoModel, "decoder": transformers.AutoModelForCausalLM,
            "encoder-decoder": transformers.AutoModelForSeq2SeqLM}[family.arch]
    transformers.set_seed(0)
    auto.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}

    def get(model_type, **extra):
        key = (model_type, tuple(sorted(extra)))
        if key not in made:
            made[key] = save_checkpoint(model_type, root / f"{model_type}-{len(made)}", **extra)
        return made[key]
    return get


def kind_of(model_type):
    return next(k for k, types in (("encoder", ENCODERS), ("decoder", DECODERS),
                                   ("encoder-decoder", ENCODER_DECODERS)) if model_type in types)


CASES = [(t, task) for group in (ENCODERS, DECODERS, ENCODER_DECODERS) for t in group
         for task in TASKS[kind_of(t)]]


def finetune(folder, task, method, run_dir, *extra):
    """``finetune task=<task> model.name_or_path=<folder> method=<method>`` in this process, leaving the run directory
    as the command does (.hydra/config.yaml as composed + the run's files)."""
    from omegaconf import OmegaConf

    from pipeline.stages.run import run

    cfg = compose([f"task={task}", f"model.name_or_path={folder}", f"method={method}", *FAST, *extra])
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run(cfg, run_dir)


@pytest.mark.parametrize("model_type,task", CASES, ids=[f"{t}-{task}" for t, task in CASES])
def test_checkpoint_by_path_fine_tunes_full_and_lora_and_the_saved_model_answers(checkpoints, tmp_path, model_type,
                                                                                  task):
    from pipeline.commands.predict import Predictor
    from pipeline.models.saved import merge

    folder = checkpoints(model_type)
    for method in ("full", "lora"):
        run_dir = tmp_path / method
        m = finetune(folder, task, method, run_dir)
        saved = json.loads((run_dir / "metrics.json").read_text())
        assert saved["family"] == model_type and m["family"] == model_type  # the checkpoint's type, none given
        assert saved["method"] == method and any(k.startswith("test_") for k in saved)
    predictor = Predictor(run_dir)  # the LoRA run's model/ (adapter + base) answers
    row = {f: "the old fox visited Paris" for f in predictor.task.input_fields}  # every input field of the task
    preds = predictor.predict([row], batch_size=1, progress=False, generation={"max_new_tokens": 3})
    assert len(preds) == 1
    out, diff = merge(str(run_dir), str(tmp_path / "merged"))
    assert (tmp_path / "merged" / "config.json").is_file() and diff < 1e-3
