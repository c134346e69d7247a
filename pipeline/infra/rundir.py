"""The run directory: writable before Hydra creates it, used by one run at a time, and its status.json.

``RunDirCheck`` is a Hydra callback (conf/hydra/default.yaml) that runs before Hydra creates the run directory: an
unwritable place gives one line and exit 2 instead of Hydra's traceback. ``RunLock`` holds an exclusive ``flock`` on
``<run dir>/.lock`` for the whole run; the kernel drops it when the process dies (even SIGKILL), so a lock left by a
dead run is simply taken over. ``write_status`` / ``read_status``: running / completed / failed (/ died: running
with no live lock holder). Light imports only: this module loads at CLI start-up.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from pipeline.errors import PipelineError
from pipeline.infra.distributed import is_main
from pipeline.util.paths import write_json_atomic

log = logging.getLogger("pipeline")
LOCK_NAME = ".lock"


class RunDirBusy(PipelineError):
    """Another live run holds the run directory."""


class Terminated(PipelineError):
    """SIGTERM (a scheduler's preemption, ``kill``): recorded as failed like any error, exit 143."""

    exit_code = 143


class Interrupted(PipelineError):
    """Ctrl-C: recorded as failed, one line instead of a traceback, exit 130 (the shell's code for SIGINT)."""

    exit_code = 130


INTERRUPTED = Interrupted("interrupted (Ctrl-C); complete checkpoints are kept; continue with resume=auto and the "
                          "same hydra.run.dir")


def raise_on_sigterm() -> None:
    """Turn SIGTERM into an exception, so the run records ``failed`` in status.json and releases its lock."""
    def handler(signum, frame):
        raise Terminated("stopped by SIGTERM (preemption or kill); complete checkpoints are kept; continue with "
                         "resume=auto and the same hydra.run.dir")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def unwritable_reason(run_dir: str | os.PathLike) -> str | None:
    """None when ``run_dir`` exists and takes files, or can be created; else why not. Creates nothing that stays."""
    d = Path(run_dir).expanduser().absolute()
    existing = next(p for p in (d, *d.parents) if os.path.lexists(p))
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        return f"cannot write in {existing}: {e.strerror or e}"
    return None


class RunDirCheck(Callback):
    """Hydra callback: refuse an unwritable hydra.run.dir / hydra.sweep.dir before Hydra tries to create it."""

    def _check(self, key: str, value) -> None:
        why = unwritable_reason(str(value))
        if why:
            print(f"error: {key}={value}: cannot create the run directory ({why}); give a writable folder with "
                  f"{key}=... (or output_root=...)", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config, **kwargs) -> None:
        self._check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)


class RunLock:
    """``with RunLock(run_dir):`` one run per directory. A second run gets RunDirBusy naming the holder."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirBusy(f"run directory {self.path.parent} is in use by another finetune run ({holder}); wait "
                             f"for it to finish or give another hydra.run.dir") from None
        except OSError as e:  # a filesystem without flock: run unlocked rather than not at all
            os.close(fd)
            log.warning("could not lock %s (%s); not protected against a second run in the same directory",
                        self.path, e)
            return self
        previous = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if previous:
            log.warning("run directory lock: taking over the stale lock of a run that died (%s)", previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # an empty lock file = released cleanly
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def is_locked(run_dir: str | os.PathLike) -> bool:
    """True while a live run holds ``<run dir>/.lock``."""
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def write_status(run_dir: Path, status: str, **extra) -> None:
    """status.json: running / completed / failed / requeued (+ time, pid, extra facts); the main process only."""
    if is_main():
        write_json_atomic(Path(run_dir) / "status.json", {"status": status, "time": time.time(), "pid": os.getpid(),
                                                          **extra})  # running + no live lock holder: read_status


def read_status(run_dir: str | os.PathLike) -> dict:
    """status.json of a run, with ``running`` turned into ``died`` when no live process holds the run's lock
    (killed by SIGKILL, the OOM killer or a lost node: it could not record its own failure). For finetune-compare."""
    try:
        status = json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {"status": "unknown", "error": "no readable status.json"}
    if status.get("status") == "running" and (Path(run_dir) / LOCK_NAME).is_file() and not is_locked(run_dir):
        status.update(status="died", error="the run stopped without recording an outcome (killed?); "
                                           "continue it with resume=auto")
    return status
