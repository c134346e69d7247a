"""Cluster sweeps through submitit's local executor (``hydra/launcher=submitit_local``: what submitit_slurm does, on
one machine): every job in its own process; the preemption signal (USR2) mid-training -> checkpoint at the end of
the step -> requeue -> resume=auto in the same run directory, ending exactly where an uninterrupted job ends; a job
signalled before its first checkpoint starts fresh; failed jobs counted from their status.json (they ran in other
processes); a job of two ranks keeps one run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

# Checkpoints every 10 steps of 24 (half of smoke's 48): job 0 is signalled once checkpoint-10 is complete, so its
# preemption checkpoint lands between two scheduled ones.
STEPS = ["debug=smoke", "trainer.eval_strategy=steps", "trainer.save_strategy=steps", "+trainer.eval_steps=10",
         "+trainer.save_steps=10", "quiet=true", "trainer.max_steps=24"]


def _metrics(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k.startswith(("eval_", "test_")) and "runtime" not in k
            and "per_second" not in k}


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _requeues(run_dir: Path) -> list[dict]:
    path = run_dir / "requeues.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """3 jobs at once: 0 and 1 identical (method=full), 2 refused (prefix tuning on BERT). Job 0 gets USR2 after
    its checkpoint-10; job 1 as soon as it runs (before training: nothing saved yet)."""
    out = tmp_path_factory.mktemp("cluster") / "sweep"
    cmd = [sys.executable, "-m", "pipeline", "--multirun", "hydra/launcher=submitit_local", "method=full,full,prefix",
           *STEPS, f"hydra.sweep.dir={out}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    signalled, t0 = {}, time.time()
    while len(signalled) < 2 and proc.poll() is None and time.time() - t0 < 400:
        for num, ready in ((0, lambda d: (d / "checkpoints" / "checkpoint-10" / "COMPLETE").is_file()),
                           (1, lambda d: _status(d).get("status") == "running")):
            run = next(iter(out.glob(f"{num}-*")), None)
            if num not in signalled and run is not None and ready(run):
                os.kill(_status(run)["pid"], signal.SIGUSR2)  # what SLURM sends signal_delay_s before the limit
                signalled[num] = run
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=400)
    return {"out": out, "rc": proc.returncode, "stderr": stderr, "signalled": signalled,
            "runs": {int(p.name.split("-", 1)[0]): p for p in out.iterdir() if p.name[0].isdigit()}}


@pytest.mark.slow
def test_preempted_job_saves_requeues_and_ends_like_an_uninterrupted_one(sweep):
    assert sorted(sweep["signalled"]) == [0, 1], sweep["stderr"][-3000:]
    runs = sweep["runs"]
    assert sorted(runs) == [0, 1, 2]  # the requeued jobs kept their run directories
    (pre,) = _requeues(runs[0])
    assert pre["signal"] == "SIGUSR2" and pre["step"] > 10 and pre["checkpoint"] == f"checkpoint-{pre['step']}"
    assert "resume=auto" in (runs[0] / ".hydra" / "overrides.yaml").read_text()  # resumed explicitly
    assert _status(runs[0])["status"] == _status(runs[1])["status"] == "completed"
    straight, resumed = _metrics(runs[1]), _metrics(runs[0])
    assert straight and resumed == straight  # bit-identical on CPU

    from safetensors.torch import load_file

    w0, w1 = (load_file(str(runs[n] / "model" / "model.safetensors")) for n in (0, 1))
    assert w0.keys() == w1.keys() and all((w0[k] == w1[k]).all() for k in w0)


@pytest.mark.slow
def test_job_signalled_before_any_checkpoint_starts_fresh(sweep):
    (pre,) = _requeues(sweep["runs"][1])
    assert pre["step"] is None and pre["checkpoint"] is None
    assert "resume" not in (sweep["runs"][1] / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_failed_job_of_another_process_is_counted_from_its_status_json(sweep):
    assert sweep["rc"] == 1, sweep["stderr"][-3000:]
    last = sweep["stderr"].strip().splitlines()[-1]
    assert last.startswith("error: 1 sweep job(s) failed:") and sweep["runs"][2].name in last
    report = json.loads((sweep["out"] / "comparison.json").read_text())
    rows = [r for s in report["sections"] for r in s["runs"]]
    assert [(r["status"], "prefix tuning" in r["error"]) for r in rows] == [
        ("completed", False), ("completed", False), ("failed", True)]
    assert (sweep["out"] / "comparison.html").is_file()


@pytest.mark.slow
def test_job_of_two_ranks_keeps_one_run_directory(tmp_path):
    r = run_cli(["--multirun", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", "debug=smoke",
                 "quiet=true", "num_samples=0", f"hydra.sweep.dir={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [p for p in tmp_path.iterdir() if p.name[0].isdigit()]
    assert len(runs) == 1 and (runs[0] / ".hydra").is_dir() and (runs[0] / "model").is_dir()
    m = json.loads((runs[0] / "metrics.json").read_text())
    assert m["processes"] == 2 and m["replicas_in_sync"] is True and m["distributed_type"] == "MULTI_CPU"


def test_resubmission_resumes_only_from_a_complete_checkpoint(tmp_path):
    from hydra_plugins.finetune_pipeline.submitit_launcher import LocalLauncher

    launcher = LocalLauncher(submitit_folder=str(tmp_path / ".submitit"), timeout_min=1)
    launcher._run_dir = str(tmp_path)
    args = ("hydra.sweep.dir", 0, "job_id_for_0", {})
    assert launcher.checkpoint(["seed=1"], *args).args[0] == ["seed=1"]  # nothing saved yet: a fresh start
    ckpt = tmp_path / "checkpoints" / "checkpoint-7"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"x")
    assert launcher.checkpoint(["seed=1"], *args).args[0] == ["seed=1"]  # no COMPLETE marker: not resumable
    (ckpt / "COMPLETE").write_text(json.dumps({"step": 7, "files": ["model.safetensors"]}))
    resub = launcher.checkpoint(["seed=1"], *args)
    assert resub.args[0] == ["seed=1", "resume=auto"] and resub.args[1:] == args and resub.function is launcher
    assert launcher.checkpoint(["resume=auto"], *args).args[0] == ["resume=auto"]  # never twice


def test_missing_cluster_package_is_named_with_its_install_command(monkeypatch):
    import importlib.util

    from pipeline.infra import sweep

    target = "hydra_plugins.finetune_pipeline.submitit_launcher.SlurmLauncher"
    assert sweep.missing_plugin(target) is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "submitit" else real(name, *a))
    assert sweep.missing_plugin(target) == "submitit is not installed; pip install 'finetune-pipeline[cluster]'"
    assert sweep.missing_plugin("hydra._internal.core_plugins.basic_launcher.BasicLauncher") is None


def compose_hydra(overrides: list[str]):
    """The config with its hydra node."""
    from hydra import compose, initialize_config_dir

    from pipeline.infra.sweep import quiet_schema_notice

    quiet_schema_notice()  # conf/hydra/launcher/ replaces the plugin's configs of the same name on purpose
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_slurm_job_script_carries_the_launcher_settings(tmp_path, monkeypatch):
    """The sbatch script submitit writes from conf/hydra/launcher/submitit_slurm.yaml (+ overrides): one rank per
    GPU, the scheduler's USR2 signal_delay_s before the limit. ``srun`` is a stand-in so submitit builds its SLURM
    executor off a cluster; nothing is submitted."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    (tmp_path / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    cfg = compose_hydra(["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "name=ner",
                         "hydra.launcher.gpus_per_node=4", "hydra.launcher.nodes=2", "hydra.launcher.timeout_min=90",
                         f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    HydraConfig.instance().set_config(cfg)
    executor = instantiate(cfg.hydra.launcher).executor()
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit X", "uid")
    for line in ("--partition=gpu", "--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--time=90",
                 "--signal=USR2@120", "--job-name=finetune-ner"):
        assert f"#SBATCH {line}\n" in script, line
    assert f"{tmp_path / 'sweep'}/.submitit/%j" in script


def test_slurm_launcher_off_a_cluster_is_refused_in_one_line(tmp_path):
    r = run_cli(["--multirun", "hydra/launcher=submitit_slurm", "debug=smoke", f"hydra.sweep.dir={tmp_path}"],
                env={"PATH": os.path.dirname(sys.executable)})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: hydra/launcher: sbatch and srun not found: submit from a SLURM "
                                             "login node, or run the jobs on this machine with "
                                             "hydra/launcher=submitit_local"]


@pytest.mark.parametrize("plugin", ["hydra/launcher=submitit_slurm", "hydra/sweeper=optuna"])
def test_launcher_or_sweeper_without_multirun_is_refused_before_anything_trains(plugin, tmp_path):
    """Hydra ignores a launcher (or a sweeper) outside --multirun: the job would train on this machine and exit 0."""
    r = run_cli([plugin, "debug=smoke", f"hydra.run.dir={tmp_path / 'run'}"])
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {plugin.split('=')[0]} is ") and "add --multirun" in line, line
    assert not (tmp_path / "run").exists()
