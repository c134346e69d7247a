"""Two processes under `accelerate launch` on CPU (gloo DDP) train exactly like one process with the same global
batch: both ranks run, one run directory, parameters identical across ranks, and the per-step training loss and the
final weights equal a single-process run. Also: a failure on one rank ends the run with its error shown once.

Why the runs are comparable: trainer.global_batch_size=16 gives 1 x 16 or 2 x 8 samples per step; accelerate shards
the same seeded random order (rank r takes micro-batch r of each step), so a step sees the same 16 blocks; causal-LM
blocks all have 32 tokens, so the mean of the two ranks' mean losses (what DDP averages and Trainer logs) is the
global mean; dropout is 0 (each rank would draw its own masks); max_steps stays inside the first epoch (no partial
last batch). What is left is float summation order: measured max differences are 1e-7 relative (loss) and 1.1e-6
(full) / 1.4e-5 (LoRA, 5x learning rate) absolute on the weights after 12 AdamW steps; the tolerances are loss rel
1e-5, weights abs 1e-4 (one step moves weights by ~3e-3).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_pipeline

STEPS = 12  # < 23 steps of 16 in one epoch of the smoke data: every step is a full global batch
COMMON = ["recipe=gpt2-generation", "debug=smoke", "model.scratch.dropout=0.0", "trainer.global_batch_size=16",
          f"trainer.max_steps={STEPS}", "trainer.logging_steps=1", "trainer.save_strategy=steps",
          f"+trainer.save_steps={STEPS}", "do_eval=false", "num_samples=0"]
METHODS = {"full": [], "lora": ["method=lora", "method.lora_dropout=0.0"]}
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(target: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2 ...` on a CPU-only machine (gloo), as the README shows."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), *target]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _losses(run_dir: Path) -> list[float]:
    state = json.loads((run_dir / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [row["loss"] for row in state["log_history"] if "loss" in row]


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(model_dir.rglob("*.safetensors"))
    assert files, f"no weights in {model_dir}"
    return {f"{f.relative_to(model_dir)}:{k}": v for f in files for k, v in load_file(f).items()}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_two_ranks_train_like_one_process(method, tmp_path):
    overrides = COMMON + METHODS[method]
    single = run_pipeline(overrides, tmp_path / "single")
    # full: a plain run (run directory from the shared timestamp); lora: a one-job --multirun (sweep directory)
    sweep = ["--multirun", "hydra.sweep.subdir=${hydra.job.num}"] if method == "lora" else []
    out = launch(["-m", "pipeline", *sweep, *overrides, f"output_root={tmp_path / 'out'}", "name=ddp"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    parent = tmp_path / "out" / ("multirun/ddp" if sweep else "ddp")
    stamps = [p for p in parent.iterdir() if p.is_dir()]
    assert len(stamps) == 1, f"ranks disagree on the run directory: {stamps}"
    jobs = [p for p in stamps[0].iterdir() if (p / ".hydra").is_dir()] if sweep else stamps
    assert len(jobs) == 1, sorted(str(p) for p in stamps[0].rglob("*"))[:20]
    run_dir = jobs[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["processes"], metrics["distributed_type"]) == (2, 2, "MULTI_CPU")
    assert (metrics["per_device_train_batch_size"], metrics["effective_batch_size"]) == (8, 16)
    assert (single["per_device_train_batch_size"], single["effective_batch_size"]) == (16, 16)
    assert metrics["replicas_in_sync"] is True  # per-tensor sums equal on both ranks at the end
    assert metrics["train_model_flops"] == single["train_model_flops"] / 2  # MFU per process: rank 0's half
    # main process only: one .hydra/, one log file without rank 1's lines, one "done:" line
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    logs = list(run_dir.glob("*.log"))
    assert len(logs) == 1 and logs[0].read_text().count("data: {") == 1
    assert out.stdout.count("done:") == 1

    multi_losses, single_losses = _losses(run_dir), _losses(tmp_path / "single")
    assert len(multi_losses) == len(single_losses) == STEPS
    loss_gap = max(abs(a - b) / abs(b) for a, b in zip(multi_losses, single_losses))
    assert loss_gap < LOSS_RTOL, (multi_losses, single_losses)
    assert multi_losses[-1] < multi_losses[0]  # it trained
    a, b = _weights(run_dir / "model"), _weights(tmp_path / "single" / "model")
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < WEIGHT_ATOL, worst
    print(f"{method}: {STEPS} steps, loss max rel diff {loss_gap:.2e}, weights max abs diff {worst:.2e}")


RANK1_FAILS = """import os, sys
if os.environ["RANK"] == "1":  # only this rank gets a bad setting: it fails after loading data and model
    sys.argv.append("+trainer.no_such_field=1")
from pipeline.commands.finetune import main
main()
"""


def test_failure_on_one_rank_ends_the_run_once(tmp_path):
    script = tmp_path / "rank1_fails.py"
    script.write_text(RANK1_FAILS)
    t = time.time()
    out = launch([str(script), "recipe=gpt2-generation", "debug=smoke", "do_eval=false", "num_samples=0",
                  f"hydra.run.dir={tmp_path / 'run'}"], timeout=180)
    assert out.returncode != 0
    assert time.time() - t < 150, "the surviving rank hung"
    err = out.stderr
    assert err.count("no_such_field") == 1, err[-3000:]  # the failing rank's error, once
    assert "Connection closed by peer" not in err and "pipeline/commands/finetune.py" not in err, err[-3000:]  # rank 0: quiet
    assert "another rank failed first" in err
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("rank 1: trainer:"), status


# ---- the settings arithmetic and the refusals (in-process, no launcher) -----------------------------------------

@pytest.mark.parametrize("global_batch,per_device_max,processes,expected", [
    (16, 16, 1, (16, 1)), (16, 16, 2, (8, 1)), (16, 16, 8, (2, 1)),  # gpt2-generation on 1, 2, 8 processes
    (32, 16, 1, (16, 2)), (32, 4, 2, (4, 4)), (24, 5, 1, (4, 6)), (None, 16, 8, (16, 1))])
def test_batch_plan_keeps_the_global_batch(global_batch, per_device_max, processes, expected):
    from pipeline.infra.distributed import batch_plan

    per_device, steps = batch_plan(global_batch, per_device_max, 1, processes)
    assert (per_device, steps) == expected
    assert global_batch is None or per_device * steps * processes == global_batch


def _configure(overrides, monkeypatch, **env):
    from conftest import compose
    from pipeline.infra.distributed import configure

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = compose(["recipe=gpt2-generation", "debug=smoke", *overrides])
    configure(cfg)
    return cfg


def test_configure_derives_batch_from_world_size(monkeypatch):
    cfg = _configure(["trainer.global_batch_size=64", "trainer.per_device_train_batch_size=16"], monkeypatch,
                     WORLD_SIZE="2")
    assert (cfg.trainer.per_device_train_batch_size, cfg.trainer.gradient_accumulation_steps) == (16, 2)


@pytest.mark.parametrize("overrides,env,message", [
    (["trainer.global_batch_size=15"], {"WORLD_SIZE": "2"}, "does not split over 2 processes"),
    ([], {"ACCELERATE_MIXED_PRECISION": "bf16"}, "mixed precision: the accelerate config says bf16"),
    (["trainer.global_batch_size=32"], {"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"}, "gradient accumulation"),
    (["trainer.activation_checkpointing=true"], {"ACCELERATE_USE_FSDP": "true",
                                                 "FSDP_ACTIVATION_CHECKPOINTING": "true"}, "activation checkpointing"),
    (["method=qlora"], {"ACCELERATE_USE_FSDP": "true"}, "bitsandbytes-quantized base weights"),
    (["rlhf=grpo"], {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
     "rlhf=grpo under DeepSpeed ZeRO-3 is not supported"),
    (["rlhf=dpo"], {"ACCELERATE_USE_FSDP": "true"}, "rlhf=dpo under FSDP is not supported"),
])
def test_configure_refuses_disagreements(overrides, env, message, monkeypatch):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as e:
        _configure(overrides, monkeypatch, **env)
    assert "\n" not in str(e.value)  # one line


def test_deepspeed_refused_when_not_installed(monkeypatch):
    from pipeline.errors import ConfigError

    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as if not installed: find_spec gives None, import fails
    with pytest.raises(ConfigError, match="pip install deepspeed"):
        _configure([], monkeypatch, ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE="3")


def test_fsdp_wraps_the_family_layer_classes(monkeypatch):
    import os

    import transformers

    from conftest import compose
    from pipeline.training.trainer import fsdp_wrap

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "")  # unset in the accelerate config
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50))
    fsdp_wrap(compose(["recipe=gpt2-generation", "debug=smoke"]), model)
    assert os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "GPT2Block"
