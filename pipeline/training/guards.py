"""Guards around the Trainer: complete-checkpoint markers, a stop on NaN/inf loss, and one-line messages for
out-of-memory, a full disk, and user errors raised deep inside datasets.map or the Trainer.

``install(trainer)`` adds the callbacks; ``user_error(exc, cfg)`` (used by cli.py) turns such an exception into a
PipelineError, or returns None for a real bug (which keeps its traceback).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from pipeline.errors import ConfigError, PipelineError
from pipeline.infra.resume import MARKER, all_checkpoints, newest_complete, why_incomplete


class TrainingError(PipelineError):
    """Training stopped for a reason the user can act on (divergence, memory, disk)."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointMarker(TrainerCallback):
    """After the Trainer has written checkpoint-N completely, flush it to disk and write ``COMPLETE`` (atomically).
    resume=auto only picks folders with the marker: a run killed mid-save never resumes from a partial folder."""

    def on_step_end(self, args, state, control, **kwargs):
        """A checkpoint of this step from an earlier run in the same directory loses its marker before the Trainer
        writes over it: killed mid-save, the mixed folder must not count as complete."""
        if state.is_world_process_zero:
            (Path(args.output_dir) / f"checkpoint-{state.global_step}" / MARKER).unlink(missing_ok=True)

    def on_save(self, args, state, control, **kwargs):
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank has written its part (rng_state_<rank>.pth, shards)
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not ckpt.is_dir():
            return
        files = sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*") if p.is_file() and p.name != MARKER)
        for f in files:
            _fsync(ckpt / f)
        tmp = ckpt / f".{MARKER}.tmp"
        tmp.write_text(json.dumps({"step": state.global_step, "files": files}))
        _fsync(tmp)
        os.replace(tmp, ckpt / MARKER)
        _fsync(ckpt)


def _last_good(args) -> str:
    ckpt = newest_complete(Path(args.output_dir).parent)
    return f"the last good checkpoint is kept: {ckpt}" if ckpt else "no checkpoint had been saved yet"


class NonFiniteGuard(TrainerCallback):
    """Stop on a NaN/inf training loss (every log) or non-finite weights (before every save), naming the step.
    Raising here, before the Trainer's save of the same step, means no checkpoint with broken weights is written.
    Needs ``logging_nan_inf_filter=False`` (train.py): with the filter the Trainer hides NaN losses in the logs."""

    last_logged = 0  # global step of the previous loss log: a logged loss is the mean of the steps since

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_logged = state.global_step  # > 0 when resumed

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        first, self.last_logged = self.last_logged + 1, state.global_step
        if isinstance(loss, (int, float)) and not math.isfinite(loss):
            span = f"steps {first}-{state.global_step}" if first < state.global_step else f"step {first}"
            raise TrainingError(f"training loss is {loss} at step {state.global_step} (mean over {span}); stopped, "
                                f"{_last_good(args)}; lower trainer.learning_rate, keep trainer.max_grad_norm > 0, "
                                f"or train in bf16/fp32 instead of fp16")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if control.should_save:  # step-based saves are decided here, epoch saves in on_epoch_end
            self._check_weights(args, state, model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if control.should_save:
            self._check_weights(args, state, model)

    @staticmethod
    def _check_weights(args, state, model) -> None:
        if model is None:
            return
        bad = next((n for n, p in model.named_parameters() if not torch.isfinite(p.detach()).all()), None)
        if bad is not None:
            raise TrainingError(f"weight {bad} is not finite at step {state.global_step}; stopped before saving, "
                                f"{_last_good(args)}; lower trainer.learning_rate or keep trainer.max_grad_norm > 0")


def _samplers(dataloader):
    seen, todo = [], [dataloader]
    while todo:
        obj = todo.pop()
        if obj is None or any(obj is s for s in seen):
            continue
        seen.append(obj)
        todo += [getattr(obj, a, None) for a in ("sampler", "batch_sampler", "base_dataloader")]
    return seen


class EpochSeededOrder(TrainerCallback):
    """group_by_length draws each epoch's order from the global torch RNG, whose state at the start of an epoch
    differs after a resume, so a resumed run would see other batches. Seeding the sampler with (seed, epoch) before
    every epoch makes the order a function of the epoch alone: a resumed epoch replays the same batches (the Trainer
    then skips those already trained). RandomSampler is already seeded per epoch by accelerate."""

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        epoch = int(state.epoch + 1e-6)
        for s in _samplers(train_dataloader):
            if isinstance(s, LengthGroupedSampler):
                s.generator = torch.Generator().manual_seed((args.data_seed or args.seed) * 1000 + epoch)


def install(trainer) -> None:
    trainer.add_callback(CheckpointMarker())
    trainer.add_callback(NonFiniteGuard())
    trainer.add_callback(EpochSeededOrder())


# -- exceptions -> one line -------------------------------------------------------------------------------------
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DISK_WORDS = ("No space left on device", "Disk quota exceeded", "File too large")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def oom_message(exc: BaseException, cfg) -> str:
    t = cfg.trainer
    return (f"out of memory ({_first_line(exc)}); lower trainer.per_device_train_batch_size "
            f"(now {t.per_device_train_batch_size}) / per_device_eval_batch_size (now {t.per_device_eval_batch_size}) "
            f"and raise trainer.gradient_accumulation_steps (now {t.gradient_accumulation_steps}) to keep the "
            f"global batch, set trainer.activation_checkpointing=true, train adapters (method=lora), use "
            f"trainer.bf16=true, shorten task.max_length / block_size / max_source_length, or let the Trainer halve the "
            f"batch on OOM: +trainer.auto_find_batch_size=true")


def user_error(exc: BaseException, cfg=None, run_dir: Path | None = None) -> PipelineError | None:
    """A PipelineError for ``exc`` when it is the user's to fix (or wraps such an error), else None."""
    for e in _chain(exc):
        if isinstance(e, PipelineError):
            return e
    for e in _chain(exc):
        if isinstance(e, KeyError) and "metric_for_best_model" in str(e) and cfg is not None:
            shown = sorted(k for k in re.findall(r"'eval_(\w+)'", str(e))
                           if not k.endswith(("runtime", "per_second", "_number")) and k not in
                           ("epoch", str(cfg.task.metric)))
            return ConfigError(f"task.metric={cfg.task.metric}: the evaluation has no eval_{cfg.task.metric}; use "
                               f"one of {', '.join(shown)} (complete checkpoints are kept; resume=auto continues)")
    for e in _chain(exc):
        if type(e).__name__ == "OutOfMemoryError" or isinstance(e, MemoryError) or "CUDA out of memory" in str(e):
            return TrainingError(oom_message(e, cfg) if cfg is not None else f"out of memory ({_first_line(e)})")
        disk = getattr(e, "errno", None) in DISK_ERRNOS or any(w in str(e) for w in DISK_WORDS)
        if disk:
            kept = newest_complete(run_dir) if run_dir is not None else None
            saving = next((c for c in all_checkpoints(run_dir) if why_incomplete(c)), None) if run_dir else None
            where = getattr(e, "filename", None) or saving or "the run directory"
            state = f"the previous checkpoint is intact: {kept}" if kept else "no complete checkpoint yet"
            return TrainingError(f"disk full while writing {where} ({_first_line(e)}); {state}; free space (or "
                                 f"lower trainer.save_total_limit) and rerun with resume=auto")
    return None
