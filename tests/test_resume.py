"""Kill and resume: a run SIGKILLed mid-epoch and continued with resume=auto ends exactly where an uninterrupted run
with the same seed ends (CPU: bit-identical eval/test metrics and weights). Also: a partial checkpoint is never
picked, a hub token in the environment never reaches the run directory, and a PEFT (LoRA) run resumes too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KILLER, ROOT, run_cli, run_pipeline

# Checkpoints every 10 steps (smoke: 16 steps per epoch, 48 in all): the kill at step 25 is 9 steps into epoch 2
# and 5 steps after checkpoint-20, so the resume restores a mid-epoch dataloader position, optimizer, scheduler, RNG.
STEPS = ["debug=smoke", "trainer.eval_strategy=steps", "trainer.save_strategy=steps", "+trainer.eval_steps=10",
         "+trainer.save_steps=10"]
KILL_AT = 25
SECRET = "secret-xyz"


def _metrics(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k.startswith(("eval_", "test_")) and "runtime" not in k
            and "per_second" not in k}


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    straight, killed = base / "straight", base / "killed"
    r = run_cli(STEPS + [f"hydra.run.dir={straight}"], cwd=base, env={"HF_TOKEN": SECRET})
    assert r.returncode == 0, r.stderr[-2000:]
    k = subprocess.run([sys.executable, "-c", KILLER, str(KILL_AT), "SIGKILL", *STEPS, f"hydra.run.dir={killed}"], cwd=base,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    after_kill = {
        "returncode": k.returncode,
        "checkpoints": sorted(p.name for p in (killed / "checkpoints").iterdir()),
        "outputs": [n for n in ("model", "metrics.json", ".model.partial") if (killed / n).exists()],
    }
    from pipeline.reports.runs import read_run
    from pipeline.infra.rundir import read_status

    after_kill["status"] = read_status(killed)["status"]
    after_kill["compare"] = read_run(killed, base)  # finetune-compare's row of the killed run
    r = run_cli(STEPS + [f"hydra.run.dir={killed}", "resume=auto"], cwd=base)
    assert r.returncode == 0, r.stderr[-2000:]
    return {"straight": straight, "killed": killed, "after_kill": after_kill, "resume_log": r.stderr + r.stdout}


def test_killed_run_leaves_no_final_outputs_and_reads_as_died(runs):
    k = runs["after_kill"]
    assert k["returncode"] == -signal.SIGKILL
    assert k["checkpoints"] == ["checkpoint-10", "checkpoint-20"]
    assert k["outputs"] == []  # model/ and metrics.json only appear when complete
    assert k["status"] == "died"  # status.json says running, but no live process holds the run's lock
    assert k["compare"]["status"] == "died" and "resume=auto" in k["compare"]["error"]  # finetune-compare too
    assert "checkpoint-20" in runs["resume_log"] and "stale lock" in runs["resume_log"]


def test_resumed_run_ends_exactly_like_the_uninterrupted_one(runs):
    straight, resumed = _metrics(runs["straight"]), _metrics(runs["killed"])
    assert straight and straight == resumed  # bit-identical on CPU
    w1, w2 = _weights(runs["straight"]), _weights(runs["killed"])
    assert w1.keys() == w2.keys() and all((w1[n] == w2[n]).all() for n in w1)
    state = json.loads((runs["killed"] / "status.json").read_text())
    assert state["status"] == "completed"


def test_hub_token_from_the_environment_is_not_written_by_a_run_without_push(runs):
    hits = [str(p) for p in runs["straight"].rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert hits == []  # the push path up to its refusal: tests/test_tracking.py


def test_fresh_run_in_a_directory_with_checkpoints_is_refused(runs, tmp_path):
    """Without resume=auto a run in a directory holding an earlier run's checkpoints stops before any work: its own
    checkpoints would mix with them and a later resume=auto could continue the wrong run."""
    from pipeline.errors import ConfigError

    shutil.copytree(runs["straight"] / "checkpoints", tmp_path / "checkpoints")
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(ConfigError) as e:
        run_pipeline(STEPS, tmp_path)
    line = str(e.value)
    assert "holds checkpoints of an earlier run" in line and "resume=auto" in line and "hydra.run.dir" in line
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before and "\n" not in line


def test_partial_checkpoint_is_never_picked(runs, tmp_path):
    from pipeline.infra import resume
    from pipeline.errors import ConfigError

    shutil.copytree(runs["straight"] / "checkpoints", tmp_path / "checkpoints")
    newest = resume.newest_complete(tmp_path)
    partial = tmp_path / "checkpoints" / "checkpoint-99"
    shutil.copytree(newest, partial)
    (partial / resume.MARKER).unlink()  # killed before the save finished
    assert resume.why_incomplete(partial).startswith("no COMPLETE marker")
    assert resume.resolve("auto", tmp_path) == str(newest)
    assert not partial.exists() and (tmp_path / "checkpoints" / ".incomplete" / "checkpoint-99").is_dir()
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        resume.resolve(str(tmp_path / "checkpoints" / ".incomplete" / "checkpoint-99"), tmp_path)


def test_a_checkpoint_about_to_be_overwritten_loses_its_marker_first(tmp_path):
    """A fresh run in a used directory writes checkpoint-N over an old one: unmarked first, so a kill mid-save
    leaves an incomplete folder, never an old marker over half-new files."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from pipeline.training.guards import CheckpointMarker

    ckpt = tmp_path / "checkpoints" / "checkpoint-16"
    ckpt.mkdir(parents=True)
    (ckpt / "COMPLETE").write_text("{}")
    args = TrainingArguments(output_dir=str(tmp_path / "checkpoints"), report_to="none", use_cpu=True)
    CheckpointMarker().on_step_end(args, TrainerState(global_step=15), TrainerControl())
    assert (ckpt / "COMPLETE").is_file()
    CheckpointMarker().on_step_end(args, TrainerState(global_step=16), TrainerControl())
    assert not (ckpt / "COMPLETE").exists()


def test_peft_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    """LoRA: adapter checkpoints. The crash here is an exception from a callback (same files on disk as a kill)."""
    from transformers import TrainerCallback

    import pipeline.training.trainer as train

    overrides = STEPS + ["method=lora"]
    straight = run_pipeline(overrides, tmp_path / "straight")

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == KILL_AT:
                raise KeyboardInterrupt("crash")

    build = train.build_trainer
    monkeypatch.setattr(train, "build_trainer", lambda *a, **kw: _armed(build(*a, **kw), Crash()))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(overrides, tmp_path / "crashed")
    monkeypatch.setattr(train, "build_trainer", build)
    assert (tmp_path / "crashed" / "checkpoints" / "checkpoint-20" / "adapter_model.safetensors").is_file()
    resumed = run_pipeline(overrides + ["resume=auto"], tmp_path / "crashed")
    keys = [k for k in straight if k.startswith(("eval_", "test_")) and "runtime" not in k and "per_second" not in k]
    assert keys and {k: straight[k] for k in keys} == {k: resumed[k] for k in keys}


def _armed(trainer, callback):
    trainer.add_callback(callback)
    return trainer


# -- the pretrained path (real MiniLM): same seed, same numbers; kill and resume ------------------------------------
MINILM = ["model=minilm-offline", "logger=none", "quiet=true", "data.synthetic.num_train=64",
          "data.synthetic.num_validation=16", "data.synthetic.num_test=16", "trainer.num_train_epochs=2",
          "trainer.global_batch_size=8", "trainer.per_device_train_batch_size=8", "trainer.eval_strategy=steps",
          "trainer.save_strategy=steps", "+trainer.eval_steps=4", "+trainer.save_steps=4", "trainer.logging_steps=1",
          "trainer.save_total_limit=1", "num_samples=1"]  # 8 steps per epoch, 16 in all; crash at 10 (ckpt 8)
MINILM_CRASH = 10


def _losses(run_dir: Path) -> list:
    return [(r["step"], r["loss"]) for r in json.loads((run_dir / "log_history.json").read_text()) if "loss" in r]


@pytest.mark.slow
def test_pretrained_minilm_same_seed_same_losses_and_kill_resume_is_exact(tmp_path, monkeypatch):
    """The quickstart's model (pretrained MiniLM with a new NER head): two runs with one seed log the same losses at
    every step (the head is initialised after the seed is set), and a run that crashes mid-epoch and is resumed ends
    exactly like the uninterrupted one."""
    from transformers import TrainerCallback

    import pipeline.training.trainer as train

    straight = run_pipeline(MINILM, tmp_path / "straight")

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            logged.extend((r["step"], r["loss"]) for r in state.log_history if "loss" in r and r not in seen)
            seen.extend(r for r in state.log_history if "loss" in r and r not in seen)
            if state.global_step == MINILM_CRASH:
                raise KeyboardInterrupt("crash")

    logged, seen = [], []
    build = train.build_trainer
    monkeypatch.setattr(train, "build_trainer", lambda *a, **kw: _armed(build(*a, **kw), Crash()))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(MINILM, tmp_path / "crashed")
    monkeypatch.setattr(train, "build_trainer", build)
    first = _losses(tmp_path / "straight")
    assert len(logged) >= MINILM_CRASH - 1 and logged == first[:len(logged)]  # same seed, same losses, step by step
    assert (tmp_path / "crashed" / "checkpoints" / "checkpoint-8" / "model.safetensors").is_file()
    resumed = run_pipeline(MINILM + ["resume=auto"], tmp_path / "crashed")
    keys = [k for k in straight if k.startswith(("eval_", "test_")) and "runtime" not in k and "per_second" not in k]
    assert keys and {k: straight[k] for k in keys} == {k: resumed[k] for k in keys}
    w1, w2 = _weights(tmp_path / "straight"), _weights(tmp_path / "crashed")
    assert w1.keys() == w2.keys() and all((w1[n] == w2[n]).all() for n in w1)


# -- finetune-rlhf: the run lock and SIGTERM, like finetune --------------------------------------------------------
def test_finetune_rlhf_holds_the_lock_and_records_sigterm(tmp_path):
    import time

    from pipeline.infra.rundir import is_locked

    run_dir = tmp_path / "rl"
    args = ["rlhf=reward", "rlhf.reward.init=scratch", "debug=smoke", "rlhf.reward.trainer.num_train_epochs=50",
            f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "pipeline.commands.rlhf", *args], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (run_dir / "reward" / "checkpoints").exists() and p.poll() is None:
            time.sleep(0.5)  # training has started
        assert p.poll() is None, p.communicate()[1][-2000:]
        assert is_locked(run_dir)
        second = subprocess.run([sys.executable, "-m", "pipeline.commands.rlhf", *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "is in use by another finetune run" in second.stderr
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143, err[-2000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "SIGTERM" in status["error"]
    assert not is_locked(run_dir) and "Traceback" not in err
