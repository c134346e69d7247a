"""resume=auto | <checkpoint dir>: which checkpoint a run continues from, and how a checkpoint proves it is complete.

The Trainer writes ``<run>/checkpoints/checkpoint-N`` file by file; a kill or a full disk can leave a half-written
folder. ``training/guards.CheckpointMarker`` (a TrainerCallback ``on_save``) writes ``COMPLETE`` into the folder after the
Trainer has written everything (weights, optimizer, scheduler, RNG, trainer_state.json). Only folders holding that
marker, trainer_state.json and weights are ever resumed from; incomplete ones are moved out of the way on resume.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from pipeline.errors import ConfigError

log = logging.getLogger("pipeline")

MARKER = "COMPLETE"
STATE = "trainer_state.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def why_incomplete(ckpt: Path) -> str | None:
    """None when ``ckpt`` is a complete checkpoint, else what is missing."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        return "not a directory"
    if not (ckpt / MARKER).is_file():
        return f"no {MARKER} marker: the save did not finish"
    try:
        marker = json.loads((ckpt / MARKER).read_text())
        json.loads((ckpt / STATE).read_text())
    except (OSError, ValueError) as e:
        return f"unreadable {MARKER} or {STATE} ({type(e).__name__})"
    if not any((ckpt / w).is_file() for w in WEIGHTS):
        return "no safetensors weights"
    missing = [f for f in marker.get("files", []) if not (ckpt / f).is_file()]
    return f"missing {missing[:3]}" if missing else None


def _step(path: Path) -> int:
    return int(_CKPT.match(path.name).group(1))


def all_checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N folders, newest (highest N) first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _CKPT.match(p.name)), key=_step, reverse=True)


def newest_complete(run_dir: Path) -> Path | None:
    return next((c for c in all_checkpoints(run_dir) if why_incomplete(c) is None), None)


def set_aside_incomplete(run_dir: Path) -> list[str]:
    """Move incomplete checkpoint folders to ``checkpoints/.incomplete/`` so the Trainer's rotation never keeps a
    broken folder in place of a good one (and a new save of the same step starts from an empty folder)."""
    moved = []
    for c in all_checkpoints(run_dir):
        if why_incomplete(c) is not None:
            dest = c.parent / ".incomplete" / c.name
            shutil.rmtree(dest, ignore_errors=True)
            dest.parent.mkdir(exist_ok=True)
            os.replace(c, dest)
            moved.append(c.name)
    return moved


def resolve(value, run_dir: Path, tidy: bool = True) -> str | None:
    """The checkpoint path to hand to ``Trainer.train(resume_from_checkpoint=...)``, or None for a fresh start.

    No resume in a directory that already holds checkpoints is refused: a fresh run never mixes with them.
    ``resume=auto`` (or true): the newest complete checkpoint under ``<run dir>/checkpoints``; an error when there is
    none, since that almost always means hydra.run.dir does not point at the run to continue.
    ``resume=<path>``: that checkpoint folder, which must be complete.
    """
    run_dir = Path(run_dir)
    if value in (None, False, "", "none", "null"):
        earlier = [c.name for c in all_checkpoints(run_dir)]
        if earlier:  # a fresh run would mix its checkpoints with these; a later resume=auto could pick the wrong one
            shown = ", ".join(earlier[:3]) + (f" and {len(earlier) - 3} more" if len(earlier) > 3 else "")
            raise ConfigError(f"{checkpoints_dir(run_dir)} holds checkpoints of an earlier run ({shown}); continue "
                              f"that run with resume=auto, or start fresh in another directory (hydra.run.dir=...) "
                              f"or after deleting that folder")
        return None
    if value is True or str(value).lower() in ("auto", "true", "last"):
        ckpt = newest_complete(run_dir)
        if ckpt is None:
            found = [c.name for c in all_checkpoints(run_dir)]
            what = f"only incomplete checkpoints {found}" if found else "no checkpoints"
            raise ConfigError(f"resume=auto: nothing to resume in {checkpoints_dir(run_dir)} ({what}); point "
                              f"hydra.run.dir=<run directory of the run to continue>, or drop resume=auto to start "
                              f"fresh")
    else:
        ckpt = Path(str(value)).expanduser()
        problem = why_incomplete(ckpt)
        if problem is not None:
            raise ConfigError(f"resume={value}: not a complete checkpoint ({problem}); give a "
                              f"<run>/checkpoints/checkpoint-N folder written by finetune, or resume=auto")
    moved = set_aside_incomplete(run_dir) if tidy else []  # tidy: the main process only
    if moved:
        log.warning("resume: incomplete checkpoints %s moved to %s", moved, checkpoints_dir(run_dir) / ".incomplete")
    log.info("resume: continuing from %s", ckpt)
    return str(ckpt)
