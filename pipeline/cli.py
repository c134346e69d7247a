"""``finetune`` / ``python -m pipeline``: the Hydra application.

Imports stay light (hydra, omegaconf) until a run starts, so ``--help`` and ``--cfg job`` are fast.
Errors the user can fix (pipeline.errors.PipelineError) print one line and exit 2; ``debug_errors=true`` or
HYDRA_FULL_ERROR=1 shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline import distributed
from pipeline.sweep import FAILED_JOBS  # a sweep's failed jobs, counted from their status.json (sweep.SweepJobs)

log = logging.getLogger("pipeline")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # editable install: the repo's conf/
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
    from pipeline.sweep import quiet_schema_notice

    quiet_schema_notice()  # our submitit_* launcher configs replace the plugin's on purpose


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from pipeline.errors import PipelineError

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    full_errors = bool(cfg.get("debug_errors")) or os.environ.get("HYDRA_FULL_ERROR") == "1"
    from contextlib import nullcontext

    from pipeline.lock import RunLock, Terminated, raise_on_sigterm
    from pipeline.run import is_main_process, run, write_status

    lock = RunLock(run_dir) if is_main_process() else nullcontext()
    try:
        lock.__enter__()  # one run per directory; a busy one is left alone, its status.json included
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    raise_on_sigterm()  # preemption: status.json says failed, the lock is released
    if os.environ.get("SUBMITIT_EXECUTOR"):  # a submitit sweep job: its preemption signal checkpoints + requeues
        from pipeline import cluster

        cluster.install_signal_handlers(run_dir)
    write_status(run_dir, "running")
    from pipeline import console, tracking

    console.start(cfg)  # the config tree (main process), or quiet=true: no tree, no progress bars
    try:
        metrics = run(cfg, run_dir)
    except BaseException as e:
        from pipeline.guards import user_error  # OOM, disk full, a PipelineError wrapped by datasets / Trainer

        cluster = sys.modules.get("pipeline.cluster")  # loaded in submitit jobs only
        if isinstance(e, SystemExit) and cluster is not None and cluster.requeued():
            write_status(run_dir, "requeued", **cluster.requeue_facts())
            raise  # submitit requeued the job: it continues in this run directory from the checkpoint
        tracking.fail()  # an open MLflow / W&B run is closed as failed

        err = e if isinstance(e, PipelineError) else user_error(e, cfg, run_dir)
        write_status(run_dir, "failed", error=distributed.root_error(str(err) if err else f"{type(e).__name__}: {e}"))
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
    console.finish(cfg, metrics, run_dir, metrics.get("hub_url"))  # summary table + one line, main process only
    return metrics.get(f"eval_{cfg.task.metric}")  # a sweep's objective: the validation metric, never a test one


def main() -> None:
    from pipeline import help as fast_help  # --help without Hydra's per-group repository rebuilds (~3x faster)

    if fast_help.wants_help(sys.argv[1:]) and fast_help.print_help(sys.argv[1:], CONF_DIR):
        return
    launch(_app)


def launch(app) -> None:
    """Run a Hydra app: under accelerate launch / torchrun every rank agrees on one run directory first; at the end
    the process group (if any: DeepSpeed makes one for a single process too) is destroyed, and a rank of several
    leaves without interpreter finalisation (distributed.exit_process). Shared by ``finetune`` and
    ``finetune-rlhf``."""
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
        import traceback

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


if __name__ == "__main__":
    main()
