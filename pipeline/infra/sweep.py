"""A ``--multirun`` sweep as a whole: its plugins installed, and which of its jobs failed, counted from their
status.json files (jobs may run in other processes or on other machines: submitit launchers) once every job has
ended. ``SweepJobs`` is a Hydra callback (conf/hydra/default.yaml); commands/app.launch exits 1 naming the failed
jobs after the sweep's report is written. Light imports: this loads at CLI start-up.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
import warnings
from pathlib import Path

from hydra.experimental.callback import Callback

from pipeline.infra.rundir import read_status

FAILED_JOBS: list[str] = []       # run directories (or launcher job names) of this sweep's failed jobs
LAUNCH_FAILURES: list[str] = []   # jobs whose process ended without a result nor a status.json (the launcher's)
# hydra/launcher or hydra/sweeper target module prefix -> (modules it needs, the pip command that installs them)
PLUGINS = {
    "hydra_plugins.finetune_pipeline.submitit_launcher": (("submitit", "hydra_plugins.hydra_submitit_launcher"),
                                                           "pip install 'finetune-pipeline[cluster]'"),
    "hydra_plugins.finetune_pipeline.optuna_sweeper": (("optuna",), "pip install 'finetune-pipeline[cluster]'"),
}


def quiet_schema_notice() -> None:
    """conf/hydra/launcher/submitit_*.yaml stand in for the plugin's configs of the same name on purpose (Hydra
    still checks them against the plugin's schema): no deprecation notice at every start (CLI and job processes)."""
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_\w+' is validated against ConfigStore")


def missing_plugin(target: str) -> str | None:
    """The install command when the launcher / sweeper ``target`` needs a package that is absent, else None."""
    for prefix, (modules, how) in PLUGINS.items():
        if target.startswith(prefix):
            for m in modules:
                try:
                    found = importlib.util.find_spec(m) is not None
                except ModuleNotFoundError:
                    found = False
                if not found:
                    return f"{m.split('.')[-1].replace('_', '-')} is not installed; {how}"
    return None


def off_cluster(target: str) -> str | None:
    """Why a SLURM launcher cannot submit from here (no sbatch / srun on PATH), else None."""
    if target.endswith(".SlurmLauncher"):
        missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
        if missing:
            return (f"{' and '.join(missing)} not found: submit from a SLURM login node, or run the jobs on this "
                    f"machine with hydra/launcher=submitit_local")
    return None


def failed_runs(sweep_dir: Path, since: float = 0.0) -> list[Path]:
    """Run directories under ``sweep_dir`` whose status.json (written at or after ``since``) says failed or died
    (a job killed before it could record its end: no live process holds its lock)."""
    failed = []
    for status_file in sorted(Path(sweep_dir).rglob("status.json")):
        if {"checkpoints", "model"} & set(status_file.relative_to(sweep_dir).parts[:-1]):
            continue
        status = read_status(status_file.parent)
        if status.get("time", since) >= since and status.get("status") in ("failed", "died"):
            failed.append(status_file.parent)
    return failed


BASIC = {"launcher": "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
         "sweeper": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}


def unused_plugin(config) -> str | None:
    """A launcher or sweeper chosen for a single run, which Hydra ignores without --multirun (the run would train
    right here, e.g. on a SLURM login node, and exit 0): the one-line refusal, else None."""
    for group, basic in BASIC.items():
        target = str(config.hydra[group].get("_target_", basic))
        if target != basic:
            name = target.rsplit(".", 1)[-1]
            return (f"hydra/{group} is {name}, which only {'launches' if group == 'launcher' else 'runs'} "
                    f"--multirun sweeps: without --multirun this run would train here, on this machine; add "
                    f"--multirun (one job: finetune --multirun <the same overrides>), or drop hydra/{group}=...")
    return None


class SweepJobs(Callback):
    """Refuse a launcher / sweeper whose package is missing (one line, exit 2) before any job, and one chosen for a
    single run (no --multirun); after the sweep, record its failed jobs (this invocation's only: a continued Optuna
    study has earlier runs in the same folder)."""

    started = 0.0

    def on_run_start(self, config, **kwargs) -> None:
        why = unused_plugin(config)
        if why:
            print(f"error: {why}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_start(self, config, **kwargs) -> None:
        for group in ("launcher", "sweeper"):
            target = str(config.hydra[group].get("_target_", ""))
            why = missing_plugin(target) or off_cluster(target)
            if why:
                print(f"error: hydra/{group}: {why}", file=sys.stderr)
                sys.exit(2)
        self.started = time.time() - 1.0  # status.json times are the job's clock; allow for rounding
        FAILED_JOBS.clear()
        LAUNCH_FAILURES.clear()

    def on_multirun_end(self, config, **kwargs) -> None:
        FAILED_JOBS[:] = [str(p) for p in failed_runs(Path(str(config.hydra.sweep.dir)), self.started)]
        FAILED_JOBS.extend(LAUNCH_FAILURES)
