"""The Hydra app wrapper of ``finetune`` and ``finetune-rlhf`` (``hydra_app`` + ``launch``).

``hydra_app(body, finish)`` is a Hydra main function that, around ``body(cfg, run_dir) -> metrics``:
- holds the run directory's lock (main process; a busy directory is left alone, its status.json included);
- turns SIGTERM into a recorded failure, and in a submitit job hands its preemption signal to a checkpoint + requeue;
- writes status.json (running, then completed / failed / requeued) and starts the console (config tree or quiet);
- on a failure: an open MLflow / W&B run is closed as failed; a user error (``PipelineError``, or what
  training/guards.py ``user_error`` recognises: out of memory, disk full) is one line on stderr and its exit code (2,
  143 for SIGTERM), a bug keeps its traceback (exit 1); with several ranks the first failure shows, the others leave
  quietly; in a ``--multirun`` sweep the failure is logged and the sweep goes on (``launch`` exits 1 at its end);
- then ``finish(cfg, metrics, run_dir)``: its return value is the sweep's objective.
``launch(app)``: under accelerate launch / torchrun every rank agrees on one run directory first, and the process
group is shut down at the end.

Imports stay light (hydra, omegaconf and the light infra modules) until a run starts: ``--help`` and ``--cfg job``
import no torch; the heavy modules are imported inside the functions that run a job, with the reason beside them.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from pipeline.commands import one_line_errors
from pipeline.errors import PipelineError
from pipeline.infra import distributed
from pipeline.infra.rundir import RunLock, Terminated, raise_on_sigterm, write_status
from pipeline.infra.sweep import FAILED_JOBS, quiet_schema_notice
from pipeline.integrations import tracking
from pipeline.reports import console
from pipeline.util.paths import CONF_DIR

log = logging.getLogger("pipeline")
COLUMN_MAPPING = re.compile(r"(rlhf\.)?data\.columns\.[\w-]+=")


def user_overrides(args: list[str]) -> list[str]:
    """Command-line overrides as Hydra takes them: ``data.columns.<canonical>=<yours>`` maps a column whether or not
    the data config already names it (Hydra alone wants ``+`` for a key the config lacks, e.g. ``text_pair``)."""
    return ["++" + a if COLUMN_MAPPING.match(a) else a for a in args]


def _prepare_env() -> None:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")  # evaluate ignores HF_HUB_OFFLINE
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_schema_notice()  # our submitit_* launcher configs replace the plugin's on purpose


def hydra_app(body, finish):
    """The Hydra main function running ``body`` as one job (see the module docstring). Its job name (the log file's
    name) is the name of ``body``'s module."""

    @functools.wraps(body)
    def app(cfg):
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        full_errors = bool(cfg.get("debug_errors")) or os.environ.get("HYDRA_FULL_ERROR") == "1"
        lock = RunLock(run_dir) if distributed.is_main() else nullcontext()
        with one_line_errors():
            lock.__enter__()  # one run per directory; a busy one is left alone, its status.json included
        raise_on_sigterm()  # preemption: status.json says failed, the lock is released
        cluster = None
        if os.environ.get("SUBMITIT_EXECUTOR"):  # a submitit sweep job: its preemption signal checkpoints + requeues
            from pipeline.infra import cluster  # imports transformers: only in submitit jobs

            cluster.install_signal_handlers(run_dir)
        write_status(run_dir, "running")
        console.start(cfg)  # the config tree (main process), or quiet=true: no tree, no progress bars
        try:
            metrics = body(cfg, run_dir)
        except BaseException as e:
            # out of memory, disk full, a PipelineError wrapped by datasets / the Trainer; imports torch: only here
            from pipeline.training.guards import user_error

            if isinstance(e, SystemExit) and cluster is not None and cluster.requeued():
                write_status(run_dir, "requeued", **cluster.requeue_facts())
                raise  # submitit requeued the job: it continues in this run directory from the checkpoint
            tracking.fail()  # an open MLflow / W&B run is closed as failed
            err = e if isinstance(e, PipelineError) else user_error(e, cfg, run_dir)
            write_status(run_dir, "failed",
                         error=distributed.root_error(str(err) if err else f"{type(e).__name__}: {e}"))
            distributed.exit_if_secondary(err.exit_code if err else 1)  # several ranks: the first failure shows
            sweep = str(HydraConfig.get().mode) == "RunMode.MULTIRUN" and not isinstance(e, Terminated)
            if isinstance(e, Exception) and not full_errors and sweep:
                # a sweep goes on to its other jobs; status.json and the sweep's comparison report list this failure
                log.error("error: %s: %s", run_dir.name, err or f"{type(e).__name__}: {e}", exc_info=err is None)
                return None
            if err is None or full_errors:
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        finally:
            lock.__exit__(None, None, None)
        write_status(run_dir, "completed")
        return finish(cfg, metrics, run_dir)

    return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(app)


def launch(app) -> None:
    """Run a Hydra app: under accelerate launch / torchrun every rank agrees on one run directory first; at the end
    the process group (if any: DeepSpeed makes one for a single process too) is destroyed, and a rank of several
    leaves without interpreter finalisation (distributed.exit_process). A sweep with failed jobs exits 1."""
    _prepare_env()
    sys.argv[1:] = user_overrides(sys.argv[1:])
    distributed.before_hydra()  # quiet non-main ranks, one run directory
    if distributed.world_size() <= 1:
        try:
            app()
        finally:
            distributed.shutdown()
        _exit_if_jobs_failed()
        return
    code: int | str | None = 0
    try:
        app()
    except SystemExit as e:  # Hydra's own errors, our one-line errors (exit 2)
        code = e.code
    except BaseException:  # debug_errors=true / HYDRA_FULL_ERROR=1: the traceback, then exit 1
        traceback.print_exc()
        code = 1
    distributed.shutdown()
    if code in (0, None) and FAILED_JOBS:
        code = 1
    distributed.exit_process(code)


def _exit_if_jobs_failed() -> None:
    """A sweep with failed jobs ran the others and wrote its comparison report; the command still fails (exit 1)
    so scripts and CI notice, like ``make -k``."""
    if FAILED_JOBS:
        names = ", ".join(str(p) for p in FAILED_JOBS[:3])
        more = f" and {len(FAILED_JOBS) - 3} more" if len(FAILED_JOBS) > 3 else ""
        print(f"error: {len(FAILED_JOBS)} sweep job(s) failed: {names}{more}; each error is in its status.json and "
              f"in the sweep's comparison.md", file=sys.stderr)
        sys.exit(1)
