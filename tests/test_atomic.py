"""Nothing half-written: final outputs appear whole, one run per directory (stale locks taken over), and the
guards: NaN loss stops the run keeping the last good checkpoint, OOM and a full disk give one actionable line."""

from __future__ import annotations

import json
import logging
import math
import resource
import signal
import subprocess
import sys
import time

import pytest
from transformers import TrainerCallback

from conftest import ROOT, compose, run_cli

SMOKE = ["debug=smoke", "trainer.report_to=none"]


# -- atomic files -------------------------------------------------------------------------------------------------
def test_publish_dir_swaps_whole_folders_and_json_is_written_aside(tmp_path):
    from pipeline.util.paths import publish_dir, write_json_atomic

    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    partial = tmp_path / ".model.partial"
    partial.mkdir()
    (partial / "new.txt").write_text("new")
    publish_dir(partial, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no .partial, no .old left
    write_json_atomic(tmp_path / "metrics.json", {"a": 1})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model"]


# -- one run per directory ----------------------------------------------------------------------------------------
HOLDER = """
import sys, time
from pipeline.infra.rundir import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_run_in_the_same_directory_is_refused_then_a_stale_lock_is_taken_over(tmp_path, caplog):
    from pipeline.infra.rundir import RunLock, read_status

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = run_cli(SMOKE + [f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert f"error: run directory {run_dir} is in use by another finetune run (pid {holder.pid} on " \
               in r.stderr and "give another hydra.run.dir" in r.stderr and "Traceback" not in r.stderr
        assert not (run_dir / "status.json").exists()  # the refused run touched nothing of the other's
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    (run_dir / "status.json").write_text(json.dumps({"status": "running", "time": time.time()}))
    assert read_status(run_dir)["status"] == "died"
    with caplog.at_level(logging.WARNING, logger="pipeline"), RunLock(run_dir):
        assert read_status(run_dir)["status"] == "running"
    assert f"taking over the stale lock of a run that died (pid {holder.pid}" in caplog.text


@pytest.mark.parametrize("sig,code,line", [
    ("SIGTERM", 143, "error: stopped by SIGTERM (preemption or kill); complete checkpoints are kept; continue with "
                     "resume=auto and the same hydra.run.dir"),
    ("SIGINT", 130, "error: interrupted (Ctrl-C); complete checkpoints are kept; continue with resume=auto and the "
                    "same hydra.run.dir"),
])
def test_sigterm_or_ctrl_c_marks_the_run_failed_in_one_line_and_releases_the_lock(sig, code, line, tmp_path):
    import os

    from pipeline.infra.rundir import is_locked
    from conftest import KILLER

    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", KILLER, "20", sig, *SMOKE, f"hydra.run.dir={run_dir}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == code, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == line and "Traceback" not in r.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and line[len("error: "):] == status["error"] and not is_locked(run_dir)
    assert (run_dir / "checkpoints" / "checkpoint-16" / "COMPLETE").is_file() and not (run_dir / "model").exists()


# -- guards inside a real Trainer run -----------------------------------------------------------------------------
def _setup(tmp_path, overrides=()):
    """The stages before training, and the Trainer they lead to (tests add callbacks to it before training)."""
    from pipeline.stages.run import Run, make_trainer, train_stage, until

    r = until(Run(cfg=compose(SMOKE + list(overrides)), run_dir=tmp_path), train_stage)
    r.trainer = make_trainer(r)
    return r


class AtStep(TrainerCallback):
    def __init__(self, step, action):
        self.step, self.action = step, action

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            self.action(model)


def test_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    import torch

    from pipeline.training.guards import TrainingError
    from pipeline.infra.resume import all_checkpoints, newest_complete
    from pipeline.stages.run import train_stage

    r = _setup(tmp_path)  # 16 steps per epoch, checkpoint at each epoch end, loss logged every 4 steps

    def poison(model):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))

    r.trainer.add_callback(AtStep(18, poison))
    with pytest.raises(TrainingError) as e:
        train_stage(r)
    assert str(e.value).startswith("training loss is nan at step 20 (mean over steps 17-20); stopped, the last good "
                                   f"checkpoint is kept: {tmp_path}/checkpoints/checkpoint-16")
    assert [c.name for c in all_checkpoints(tmp_path)] == ["checkpoint-16"]
    from safetensors.torch import load_file

    weights = load_file(str(newest_complete(tmp_path) / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_out_of_memory_names_the_knobs(tmp_path):
    import torch

    from pipeline.training.guards import user_error
    from pipeline.stages.run import train_stage

    r = _setup(tmp_path)

    def oom(model):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    r.trainer.add_callback(AtStep(2, oom))
    with pytest.raises(torch.OutOfMemoryError) as e:
        train_stage(r)
    msg = str(user_error(e.value, r.cfg, tmp_path))
    assert msg.startswith("out of memory (OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB); lower "
                          "trainer.per_device_train_batch_size (now 16)")
    for knob in ("gradient_accumulation_steps", "activation_checkpointing=true", "method=lora", "bf16"):
        assert knob in msg


def test_disk_full_while_saving_leaves_the_previous_checkpoint_intact(tmp_path):
    """checkpoint-16 saves; then a file-size limit makes every write fail (EFBIG, as a full disk fails with ENOSPC)
    while checkpoint-32 is being written."""
    from pipeline.infra import resume
    from pipeline.training.guards import user_error
    from pipeline.stages.run import train_stage

    r = _setup(tmp_path)
    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.getsignal(signal.SIGXFSZ)

    class FillDiskBeforeSecondSave(TrainerCallback):
        def on_evaluate(self, args, state, control, **kwargs):  # evaluation runs right before the epoch's save
            if state.global_step == 32:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
                resource.setrlimit(resource.RLIMIT_FSIZE, (64, old_limit[1]))

    r.trainer.add_callback(FillDiskBeforeSecondSave())
    try:
        with pytest.raises(Exception) as e:
            train_stage(r)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    msg = str(user_error(e.value, r.cfg, tmp_path))
    assert msg.startswith(f"disk full while writing {tmp_path}/checkpoints/checkpoint-32 (OSError: [Errno 27] File "
                          "too large)"), msg
    assert f"the previous checkpoint is intact: {tmp_path}/checkpoints/checkpoint-16" in msg
    assert (tmp_path / "checkpoints" / "checkpoint-32").is_dir()  # half-written
    assert resume.why_incomplete(tmp_path / "checkpoints" / "checkpoint-32").startswith("no COMPLETE marker")
    assert resume.resolve("auto", tmp_path) == str(tmp_path / "checkpoints" / "checkpoint-16")


def test_trust_remote_code_is_off_and_pushes_are_private(tmp_path):
    from pipeline.tasks import get_task
    from pipeline.training.trainer import training_args

    cfg = compose(SMOKE + ["+trainer.push_to_hub=true", "+trainer.hub_model_id=me/x"])
    assert cfg.model.trust_remote_code is False and cfg.model.allow_pickle_weights is False
    args = training_args(cfg, get_task(cfg), tmp_path)
    assert args.hub_private_repo is True and args.logging_nan_inf_filter is False
    assert math.isfinite(args.learning_rate)
