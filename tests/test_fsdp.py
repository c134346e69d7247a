"""FSDP2 (conf/accelerate/fsdp.yaml, the config users launch on GPUs) on 2 CPU processes over gloo: an encoder
(bert-ner), a decoder (gpt2-generation) and an encoder-decoder (t5-translation), each full and LoRA, train like one
process; model/ is the whole gathered model and reloads; kill + resume=auto from an FSDP checkpoint ends like the
straight run; finetune-export --merge of an FSDP LoRA run reloads and predicts.

One launch trains the six jobs (a --multirun: one start-up for all). Why 1 process is comparable: the global batch is
16 in both; the 1-process reference takes it as 2 micro-batches of 8 (gradient accumulation), which are exactly the
two ranks' micro-batches (accelerate gives rank r micro-batch r of each step of the same seeded random order), and
the models' losses combine micro-batches the same way in both (a mean of micro-batch means, or for causal LMs a sum
over the whole batch's tokens: pipeline/training/trainer.loss_divides_by_item_count). Dropout is 0 (each rank would
draw its own masks). What is left is float summation order: FSDP reduce-scatters gradients (sum over ranks, then
/2) where the reference adds two accumulated micro-batch gradients; AdamW divides by sqrt(v), so a 1e-7 gradient
difference becomes ~1e-7 relative in the update. Measured (this machine, 8 steps): train loss per step max relative
difference 9e-7, final weights max absolute difference 4e-6 (T5 LoRA; 3e-7 elsewhere), eval loss 2e-7 for encoder
and encoder-decoder. Tolerances: train loss relative 1e-5 and weights absolute 1e-4 (one step moves weights by
~3e-3 at these learning rates, so a wrong reduction, e.g. a sum instead of a mean, fails by far); eval loss
relative 1e-3: the decoder's eval loss was 9e-5 off (full) / 5e-5 (LoRA) with the weights 2.5e-7 apart, a
difference in how the evaluation is split over ranks and gathered, not in training (cause not pinned down; an odd
number of eval blocks, one padded on rank 1, is the likely one).
Evaluation runs one sample per batch: with 16, the 26 validation blocks of the decoder give rank 1 a last batch of
10 that accelerate pads with 6 repeated samples, and Trainer's eval loss (each batch's mean loss repeated per
sample, then the padding cut off the end) counts those repeats: 1.3% off one process, in DDP as much as in FSDP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import KILLER, ROOT, run_pipeline

STEPS, SAVE_AT, KILL_AT = 8, 4, 6
RECIPES = {"encoder": "bert-ner", "decoder": "gpt2-generation", "encoder-decoder": "t5-translation"}
COMMON = ["debug=smoke", "model.scratch.dropout=0.0", "trainer.global_batch_size=16", f"trainer.max_steps={STEPS}",
          "trainer.logging_steps=1", "trainer.save_strategy=steps", f"+trainer.save_steps={SAVE_AT}",
          "trainer.load_best_model_at_end=false", "trainer.train_sampling_strategy=random", "num_samples=0",
          "++method.lora_dropout=0.0",  # the full method ignores lora_dropout
          "trainer.per_device_eval_batch_size=1", "data.synthetic.num_validation=16", "data.synthetic.num_test=8"]  # eval loss over the same samples: see the module docstring
LOSS_RTOL, EVAL_RTOL, WEIGHT_ATOL = 1e-5, 1e-3, 1e-4
FSDP_CONFIG = ROOT / "conf" / "accelerate" / "fsdp.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(target: list[str], timeout: int = 420, config: Path = FSDP_CONFIG,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file conf/accelerate/fsdp.yaml ...` as docs/distributed.md gives it for CPUs."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--main_process_port", str(_free_port()), *target]
    import datasets

    # the scratch tokenizer cache this process reads (datasets fixes it at import, which may precede conftest's
    # HF_DATASETS_CACHE): WordPiece training breaks ties in hash-map order, so a tokenizer trained anew by the
    # launched ranks can number the vocabulary differently from the 1-process reference's (pipeline/models/scratch.py)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "HF_DATASETS_CACHE": str(datasets.config.HF_DATASETS_CACHE), **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in json.loads((run_dir / "log_history.json").read_text()) if "loss" in row]


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(model_dir.rglob("*.safetensors"))
    assert files, f"no weights in {model_dir}"
    return {f"{f.relative_to(model_dir)}:{k}": v for f in files for k, v in load_file(f).items()}


def _job_key(run_dir: Path) -> tuple[str, str]:
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    values = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in ("recipe", "method"))
    return values["recipe"], values["method"]


@pytest.fixture(scope="module")
def fsdp_jobs(tmp_path_factory):
    """(recipe, method) -> run directory of the six jobs, trained in one 2-process FSDP launch."""
    base = tmp_path_factory.mktemp("fsdp")
    with_samples = ["num_samples=2" if o.startswith("num_samples=") else o for o in COMMON]  # generated from FSDP
    out = launch(["-m", "pipeline", "--multirun", "hydra.sweep.subdir=${hydra.job.num}",
                  f"recipe={','.join(RECIPES.values())}", "method=full,lora", *with_samples,
                  f"output_root={base}", "name=fsdp"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = {_job_key(p.parent): p.parent for p in base.glob("multirun/fsdp/*/*/metrics.json")}
    assert len(jobs) == 6, sorted(jobs)
    assert all(len((d / "samples.jsonl").read_text().splitlines()) == 2 for d in jobs.values())
    return {"jobs": jobs, "base": base, "stdout": out.stdout}


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
    """The same six jobs on one process: per-device 8 x 2 accumulation steps (the ranks' two micro-batches)."""
    base = tmp_path_factory.mktemp("single")
    runs = {}
    for recipe in RECIPES.values():
        for method in ("full", "lora"):
            run_dir = base / f"{recipe}-{method}"
            run_pipeline([f"recipe={recipe}", f"method={method}", *COMMON,
                          "trainer.per_device_train_batch_size=8"], run_dir)
            runs[recipe, method] = run_dir
    return runs


@pytest.mark.parametrize("kind", list(RECIPES))
def test_fsdp_on_two_cpu_processes_trains_like_one_and_saves_the_whole_model(kind, fsdp_jobs, single_runs):
    import torch

    from pipeline.models.saved import load_model

    recipe = RECIPES[kind]
    for method in ("full", "lora"):
        run_dir, ref = fsdp_jobs["jobs"][recipe, method], single_runs[recipe, method]
        m, s = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, ref))
        assert (m["distributed_type"], m["processes"], m["world_size"]) == ("FSDP", 2, 2)
        assert m["parameters_sharded"] == 1.0  # every parameter a DTensor: sharded, not DDP replicas
        assert (m["per_device_train_batch_size"], m["gradient_accumulation_steps"], m["effective_batch_size"]) \
            == (8, 1, 16) and (s["gradient_accumulation_steps"], s["effective_batch_size"]) == (2, 16)
        assert m["replicas_in_sync"] is None and s["distributed_type"] == "NO"

        losses, ref_losses = _losses(run_dir), _losses(ref)
        assert len(losses) == len(ref_losses) == STEPS
        loss_gap = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
        eval_gap = abs(m["eval_loss"] - s["eval_loss"]) / abs(s["eval_loss"])
        assert loss_gap < LOSS_RTOL and eval_gap < EVAL_RTOL, (losses, ref_losses, m["eval_loss"], s["eval_loss"])
        assert losses[-1] < losses[0]  # it trained

        # model/: the whole model (gathered full state dict, same names and shapes as one process) and it reloads
        a, b = _weights(run_dir / "model"), _weights(ref / "model")
        assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
        worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert worst < WEIGHT_ATOL, worst
        model_dir = run_dir / "model"
        if method == "lora":
            model = load_model(model_dir)
            assert type(model).__name__.startswith("PeftModel")
        else:
            import transformers

            config = transformers.AutoConfig.from_pretrained(model_dir)
            model = getattr(transformers, config.architectures[0]).from_pretrained(model_dir)
        assert all(torch.isfinite(p).all() for p in model.parameters())
        print(f"{kind} {method}: loss max rel diff {loss_gap:.1e}, eval loss rel diff {eval_gap:.1e}, "
              f"weights max abs diff {worst:.1e}")


def test_killed_fsdp_run_resumes_to_the_straight_run(fsdp_jobs, tmp_path):
    """Both ranks SIGKILLed at step 6 (checkpoint-4 on disk), relaunched with resume=auto: the losses after the
    checkpoint and the final weights are the straight FSDP run's (same overrides, same launch config)."""
    straight = fsdp_jobs["jobs"]["gpt2-generation", "full"]
    killed = tmp_path / "killed"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    overrides = ["recipe=gpt2-generation", "method=full", *COMMON, f"hydra.run.dir={killed}"]
    k = launch([str(script), str(KILL_AT), "SIGKILL", *overrides], timeout=240)
    assert k.returncode != 0 and not (killed / "metrics.json").exists()
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == [f"checkpoint-{SAVE_AT}"]
    r = launch(["-m", "pipeline", *overrides, "resume=auto"], timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((killed / "metrics.json").read_text())
    assert m["distributed_type"] == "FSDP"
    history = json.loads((killed / "log_history.json").read_text())
    assert f"resume: continuing from {killed / 'checkpoints' / f'checkpoint-{SAVE_AT}'}" in r.stdout + r.stderr
    resumed_losses = [h["loss"] for h in history if "loss" in h]  # steps 1-4 from checkpoint-4's trainer state
    straight_losses = _losses(straight)
    gap = max(abs(a - b) / abs(b) for a, b in zip(resumed_losses, straight_losses))
    a, b = _weights(killed / "model"), _weights(straight / "model")
    worst = max((a[key].float() - b[key].float()).abs().max().item() for key in a)
    assert len(resumed_losses) == STEPS and gap < 1e-6 and worst < 1e-6, (gap, worst)
    print(f"resume: loss max rel diff {gap:.1e}, weights max abs diff {worst:.1e}")


def test_export_merge_of_an_fsdp_lora_run_reloads_and_predicts(fsdp_jobs, single_runs, tmp_path):
    import torch
    import transformers

    from pipeline.models.saved import merge, outputs, probe_batch

    run_dir = fsdp_jobs["jobs"]["bert-ner", "lora"]
    out, diff = merge(run_dir, tmp_path / "merged")  # what finetune-export --merge runs; checks adapter == merged
    ref_out, _ = merge(single_runs["bert-ner", "lora"], tmp_path / "merged-single")
    merged = transformers.AutoModelForTokenClassification.from_pretrained(out).eval()
    reference = transformers.AutoModelForTokenClassification.from_pretrained(ref_out).eval()
    assert not hasattr(merged, "peft_config") and diff < 1e-4
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    batch = probe_batch(tokenizer, merged)
    got, expected = outputs(merged, batch), outputs(reference, batch)
    assert torch.isfinite(got).all() and (got - expected).abs().max().item() < 1e-3  # predicts like 1 process
