"""The Hydra app wrapper of ``finetune`` and ``finetune-rlhf`` (``hydra_app`` + ``launch``).

``hydra_app(body, finish)`` is a Hydra main function that, around ``body(cfg, run_dir, accept) -> metrics``:
- holds the run directory's lock (main process; a busy directory is left alone, its status.json included);
- turns SIGTERM into a recorded failure, and in a submitit job hands its preemption signal to a checkpoint + requeue;
- starts the console (config tree or quiet) and writes nothing into the run directory until ``body`` calls
  ``accept(resolved_cfg)`` (its config resolved, the machine and the directory checked): then .hydra/ (the composed
  config, Hydra's config, the overrides), status.json (running, then completed / failed / requeued) and the log
  file. A run refused before that leaves a folder that held an earlier run exactly as it was (its config, status,
  log, checkpoints and model); in a new folder it records the refusal (.hydra/, status.json failed);
- on a failure: an open MLflow / W&B run is closed as failed; a user error (``PipelineError``, or what
  training/guards.py ``user_error`` recognises: out of memory, disk full) is one line on stderr and its exit code (2,
  143 for SIGTERM), a bug keeps its traceback (exit 1); with several ranks the first failure shows, the others leave
  quietly; in a ``--multirun`` sweep the failure is logged and the sweep goes on (``launch`` exits 1 at its end);
- then ``finish(cfg, metrics, run_dir)``: its return value is the sweep's objective.
``launch(app)``: under accelerate launch / torchrun every rank agrees on one run directory first, and the process
group is shut down at the end. Hydra's own errors (an unknown config option or key, an override it cannot parse)
are one line too, with the closest option or key (``hydra_error_line``), exit 2.

Imports stay light (hydra, omegaconf and the light infra modules) until a run starts: ``--help`` and ``--cfg job``
import no torch; the heavy modules are imported inside the functions that run a job, with the reason beside them.
"""

from __future__ import annotations

import copy
import difflib
import functools
import logging
import logging.handlers
import os
import re
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import OmegaConf

from pipeline.commands import one_line_errors
from pipeline.errors import PipelineError
from pipeline.infra import distributed
from pipeline.infra.rundir import INTERRUPTED, LOCK_NAME, RunLock, Terminated, raise_on_sigterm, write_status
from pipeline.infra.sweep import FAILED_JOBS, LAUNCH_FAILURES, quiet_schema_notice
from pipeline.integrations import tracking
from pipeline.reports import console
from pipeline.util.paths import CONF_DIR, write_atomic

log = logging.getLogger("pipeline")
COLUMN_MAPPING = re.compile(r"(rlhf\.)?data\.columns\.[\w-]+=")


HOME_VALUE = re.compile(r"^([^=\s]+=)(~(?:/\S*)?)$")


def user_overrides(args: list[str]) -> list[str]:
    """Command-line overrides as Hydra takes them: ``data.columns.<canonical>=<yours>`` maps a column whether or not
    the data config already names it (Hydra alone wants ``+`` for a key the config lacks, e.g. ``text_pair``); a
    value ``~/...`` (a path the shell did not expand after ``=``) is the home folder's, where Hydra's grammar would
    refuse the ``~`` with a parser error."""
    out = []
    for a in args:
        home = HOME_VALUE.match(a)
        a = home.group(1) + os.path.expanduser(home.group(2)) if home else a
        out.append("++" + a if COLUMN_MAPPING.match(a) else a)
    return out


def _prepare_env() -> None:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")  # evaluate ignores HF_HUB_OFFLINE
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_schema_notice()  # our submitit_* launcher configs replace the plugin's on purpose


class Acceptance:
    """The run directory stays untouched until the run is accepted: log records wait in memory (the file handlers of
    Hydra's job logging are held back; the file is opened with ``delay``), .hydra/ and status.json are not written.
    ``accept()`` writes them (main process) and hands the waiting records to the log file."""

    def __init__(self, run_dir: Path, composed):
        self.run_dir, self.composed = run_dir, copy.deepcopy(composed)  # Hydra's job config, as Hydra would save it
        self.earlier = run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir())
        self.lock_existed = (run_dir / LOCK_NAME).exists()
        self.accepted = False
        root = logging.getLogger()
        self.held = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        self.buffer = logging.handlers.MemoryHandler(capacity=10 ** 6, flushLevel=logging.CRITICAL + 1)
        for h in self.held:
            root.removeHandler(h)
        root.addHandler(self.buffer)

    def _release_log(self, replay: bool) -> None:
        """Back to the log file with the waiting records (``replay``), or (a refused run in an earlier run's folder)
        to the console alone: that folder's log file is not touched."""
        root = logging.getLogger()
        root.removeHandler(self.buffer)
        for h in self.held if replay else ():
            root.addHandler(h)
            for record in self.buffer.buffer:
                h.handle(record)
        self.buffer.buffer.clear()

    def _write_hydra(self) -> None:
        hydra_cfg = HydraConfig.instance().cfg
        folder = self.run_dir / ".hydra"
        folder.mkdir(parents=True, exist_ok=True)
        for name, node in (("config.yaml", self.composed), ("hydra.yaml", hydra_cfg),
                           ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
            write_atomic(folder / name, OmegaConf.to_yaml(node))

    def __call__(self, resolved_cfg=None) -> None:
        """The run is accepted: write its record and go on logging to its file."""
        if self.accepted:
            return
        self.accepted = True
        if distributed.is_main():
            self._write_hydra()
            write_status(self.run_dir, "running")
        self._release_log(replay=True)

    def refused(self) -> bool:
        """A failure before ``accept``: True when the folder held an earlier run, which is left exactly as it was
        (the lock file too: removed when this run created it); else the refusal is recorded like any failure."""
        if self.accepted:
            return False
        if self.earlier:
            self._release_log(replay=False)
            return True
        self(None)
        return False

    def forget_lock(self) -> None:
        if not self.lock_existed and distributed.is_main():
            (self.run_dir / LOCK_NAME).unlink(missing_ok=True)


def hydra_app(body, finish):
    """The Hydra main function running ``body`` as one job (see the module docstring). Its job name (the log file's
    name) is the name of ``body``'s module."""

    @functools.wraps(body)
    def app(cfg):
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        full_errors = bool(cfg.get("debug_errors")) or user_wants_tracebacks()
        accept = Acceptance(run_dir, cfg)
        lock = RunLock(run_dir) if distributed.is_main() else nullcontext()
        with one_line_errors():
            lock.__enter__()  # one run per directory; a busy one is left alone, its status.json included
        raise_on_sigterm()  # preemption: status.json says failed, the lock is released
        cluster = None
        if os.environ.get("SUBMITIT_EXECUTOR"):  # a submitit sweep job: its preemption signal checkpoints + requeues
            from pipeline.infra import cluster  # imports transformers: only in submitit jobs

            cluster.install_signal_handlers(run_dir)
        console.start(cfg)  # the config tree (main process), or quiet=true: no tree, no progress bars
        refused_earlier = False
        try:
            metrics = body(cfg, run_dir, accept)
            accept()  # a body that never accepted explicitly: its success is accepted now
        except BaseException as e:
            # out of memory, disk full, a PipelineError wrapped by datasets / the Trainer; imports torch: only here
            from pipeline.training.guards import user_error

            if isinstance(e, SystemExit) and cluster is not None and cluster.requeued():
                write_status(run_dir, "requeued", **cluster.requeue_facts())
                raise  # submitit requeued the job: it continues in this run directory from the checkpoint
            tracking.fail()  # an open MLflow / W&B run is closed as failed
            err = e if isinstance(e, PipelineError) else INTERRUPTED if isinstance(e, KeyboardInterrupt) else \
                user_error(e, cfg, run_dir)
            refused_earlier = accept.refused()
            root = distributed.root_error(str(err) if err else f"{type(e).__name__}: {e}")
            if not refused_earlier:
                write_status(run_dir, "failed", error=root)
            distributed.exit_if_secondary(err.exit_code if err else 1)  # several ranks: the first failure shows
            sweep = str(HydraConfig.get().mode) == "RunMode.MULTIRUN" and not isinstance(e, (Terminated,
                                                                                           KeyboardInterrupt))
            if isinstance(e, Exception) and not full_errors and sweep:
                if refused_earlier:  # no status.json of its own to count it from
                    LAUNCH_FAILURES.append(f"{run_dir} (refused: {err or type(e).__name__})")
                # a sweep goes on to its other jobs; status.json and the sweep's comparison report list this failure
                log.error("error: %s: %s", run_dir.name, err or f"{type(e).__name__}: {e}", exc_info=err is None)
                return None
            if err is None or full_errors:
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        finally:
            lock.__exit__(None, None, None)
            if refused_earlier:
                accept.forget_lock()
        write_status(run_dir, "completed")
        return finish(cfg, metrics, run_dir)

    return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(app)


# launch() sets HYDRA_FULL_ERROR=1 so that Hydra raises its composition errors to us instead of printing them on
# several lines; the user's own choice travels beside it (to sweep jobs and ranks too) under this name.
USER_FULL_ERROR = "FINETUNE_HYDRA_FULL_ERROR"


def user_wants_tracebacks() -> bool:
    return os.environ.get(USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "0")) == "1"


def hydra_error_line(e: HydraException) -> str:
    """Hydra's error as one line, naming the closest option or key where the user mistyped one."""
    if isinstance(e, MissingConfigException) and e.options is not None:
        found = re.search(r"Could not find '([^']+)/([^'/]+)'", str(e))
        if found:
            group, name = found.groups()
            close = difflib.get_close_matches(name, e.options, n=1)
            hint = f"did you mean {group}={close[0]}? " if close else ""
            return f"{group}={name}: no such {group} in conf/{group}/; {hint}options: {', '.join(e.options)}"
    cause = e.__cause__
    key, parent = getattr(cause, "full_key", None), getattr(cause, "parent_node", None)
    if key and parent is not None and "not in struct" in str(cause):
        prefix, _, leaf = str(key).rpartition(".")
        close = difflib.get_close_matches(leaf, [str(k) for k in parent.keys()], n=1)
        where = f"{prefix}." if prefix else ""
        hint = f"did you mean {where}{close[0]}? " if close else ""
        return (f"{key}: no such key in the config; {hint}(a key the config lacks on purpose is added with "
                f"+{key}=...; finetune --cfg job prints every key)")
    if isinstance(e, OverrideParseException):
        message = "; ".join(line for line in e.message.splitlines() if line and not line.startswith("See https"))
        return (f"cannot read the override {e.override!r}: {message}; quote values holding spaces or brackets "
                f"(key='a value'), give lists as key=[a,b]")
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if cause is not None and str(cause).strip():
        lines.append(str(cause).splitlines()[0].strip())
    return "; ".join(lines)


def _hydra_errors_as_one_line(app) -> None:
    """Run ``app`` with Hydra's composition errors raised (HYDRA_FULL_ERROR=1) and printed as one line, exit 2;
    the traceback instead where the user set HYDRA_FULL_ERROR=1."""
    os.environ.setdefault(USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "0"))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except HydraException as e:
        if user_wants_tracebacks():
            raise
        print(f"error: {hydra_error_line(e)}", file=sys.stderr)
        sys.exit(2)


def launch(app) -> None:
    """Run a Hydra app: under accelerate launch / torchrun every rank agrees on one run directory first; at the end
    the process group (if any: DeepSpeed makes one for a single process too) is destroyed, and a rank of several
    leaves without interpreter finalisation (distributed.exit_process). A sweep with failed jobs exits 1."""
    _prepare_env()
    sys.argv[1:] = user_overrides(sys.argv[1:])
    distributed.before_hydra()  # quiet non-main ranks, one run directory
    if distributed.world_size() <= 1:
        try:
            _hydra_errors_as_one_line(app)
        finally:
            distributed.shutdown()
        _exit_if_jobs_failed()
        return
    code: int | str | None = 0
    try:
        _hydra_errors_as_one_line(app)
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
