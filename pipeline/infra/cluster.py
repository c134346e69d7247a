"""Jobs of a cluster sweep (``hydra/launcher=submitit_slurm`` or ``submitit_local``): ranks, preemption, requeue.

submitit runs each job of a ``--multirun`` in its own process (SLURM: one task per rank) and, on the scheduler's
signal before a time limit or a preemption (USR2 by default, ``SUBMITIT_PREEMPT_SIGNAL``), calls its handler, which
asks the launcher for a resubmission and requeues the job. Left alone, that handler exits in the middle of a training
step and the work since the last scheduled checkpoint is lost. Here the signal only sets a flag while training runs;
at the end of the current optimizer step every rank saves a checkpoint (``PreemptionCheckpoint``), and once it is
complete (COMPLETE marker) submitit's handler requeues the job. The launcher's resubmission
(hydra_plugins/finetune_pipeline/submitit_launcher.py) adds ``resume=auto`` when the run directory holds a complete
checkpoint, so the requeued job continues explicitly from it, in the same run directory; a job signalled before its
first checkpoint starts again fresh. On SLURM, SIGTERM (preemption without the user signal, ``scancel``) is handled
the same way; elsewhere SIGTERM stays ``Terminated`` (pipeline/lock.py).

Hooks: the launcher calls ``job_environment()`` before Hydra composes the job; the app (commands/app.py) calls
``install_signal_handlers()`` and, on the way out, ``requeued()``; the train stage calls ``attach(trainer)`` after
training/guards.install (the COMPLETE marker is written before this module's on_save runs). Outside a submitit job
every hook is a no-op. Imports transformers: import this module lazily (not at CLI start-up, not from the Hydra
plugin); submitit (the optional ``cluster`` extra) is imported by the functions that only run in a submitit job.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from pipeline.infra.distributed import rank
from pipeline.infra.resume import newest_complete

log = logging.getLogger("pipeline")
REQUEUES_FILE = "requeues.jsonl"  # one line per preemption / time-out of a run: signal, step, checkpoint
LOCAL_REQUEUE_EXIT = 144  # submitit's local executor restarts a task that exits with this code


class _State:
    submitit_handler = None   # submitit's checkpoint-and-requeue handler, called once our checkpoint is complete
    signal: int | None = None  # the signal received (None: none yet)
    training = False           # inside Trainer.train: defer to the end of the step
    run_dir: Path | None = None
    requeued = False


STATE = _State()


def in_submitit_job() -> bool:
    return bool(os.environ.get("SUBMITIT_EXECUTOR")) and bool(os.environ.get("SUBMITIT_FOLDER"))


def job_environment() -> dict:
    """In a submitit job with several tasks (``tasks_per_node`` x ``nodes`` > 1): export RANK / WORLD_SIZE /
    LOCAL_RANK / MASTER_ADDR / MASTER_PORT from submitit's view of SLURM (or the local executor), as torchrun would,
    so pipeline/distributed.py starts the process group. Returns {"rank", "world_size"}."""
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        # every rank sees all the node's GPUs and picks cuda:LOCAL_RANK (as under torchrun)
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return {"rank": env.global_rank, "world_size": env.num_tasks}


def install_signal_handlers(run_dir: Path) -> None:
    """Called by the app once the run directory is locked: take over submitit's preemption handler."""
    if not in_submitit_job():
        return
    import submitit

    STATE.run_dir = Path(run_dir)
    usr = submitit.JobEnvironment._usr_sig()
    current = signal.getsignal(usr)
    if STATE.submitit_handler is None and callable(current):
        STATE.submitit_handler = current
    signals = [usr]
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        signals.append(signal.SIGTERM)  # SLURM's preemption / scancel: checkpoint first, then requeue
    for sig in signals:
        signal.signal(sig, _on_signal)


def _on_signal(signum, frame) -> None:
    if STATE.signal is not None:
        return  # already on the way out (SLURM sends SIGTERM and USR2)
    STATE.signal = signum
    name = signal.Signals(signum).name
    if STATE.training:
        log.warning("%s: preemption or time limit; saving a checkpoint at the end of this step, then requeueing",
                    name)
        return
    log.warning("%s: preemption or time limit outside training; requeueing (complete checkpoints are kept)", name)
    _requeue(step=None, frame=frame)


def _requeue(step: int | None, frame=None) -> None:
    """Record the preemption, then hand over to submitit: it asks the launcher for the resubmission (with
    ``resume=auto`` when a complete checkpoint exists) and requeues, leaving by SystemExit."""
    STATE.requeued = True
    if rank() == 0 and STATE.run_dir is not None:
        ckpt = newest_complete(STATE.run_dir)
        with open(STATE.run_dir / REQUEUES_FILE, "a") as f:
            f.write(json.dumps({"time": time.time(), "signal": signal.Signals(STATE.signal).name, "step": step,
                                "checkpoint": ckpt.name if ckpt else None}) + "\n")
    handler = STATE.submitit_handler
    if rank() != 0 or handler is None:
        sys.exit(LOCAL_REQUEUE_EXIT)  # rank 0 requeues the job (submitit ignores the signal on other ranks)
    handler(STATE.signal, frame)  # checkpoint_and_try_requeue: exits, or raises when it will not requeue


def requeued() -> bool:
    """True once this job handed over to submitit's requeue (the app then records status ``requeued``)."""
    return STATE.requeued


def requeue_facts() -> dict:
    ckpt = newest_complete(STATE.run_dir) if STATE.run_dir is not None else None
    return {"signal": signal.Signals(STATE.signal).name if STATE.signal else None,
            "checkpoint": str(ckpt) if ckpt else None}


def _agreed(flag: bool, device) -> bool:
    """Whether any rank got the signal: all ranks must save the same step (sharded saves are collective)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class PreemptionCheckpoint(TrainerCallback):
    """After the step in which the signal came: save (every rank), then requeue once the checkpoint is complete."""

    save_step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        STATE.training = True

    def on_step_end(self, args, state, control, **kwargs):
        if _agreed(STATE.signal is not None, args.device):
            if STATE.signal is None:
                STATE.signal = signal.SIGUSR2  # another rank was signalled
            self.save_step = state.global_step
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        if self.save_step == state.global_step:  # guards.CheckpointMarker (added before) has marked it complete
            _requeue(step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        STATE.training = False
        if STATE.signal is not None:  # the signal came in the last step, after its save: requeue now
            _requeue(step=state.global_step)


def attach(trainer) -> None:
    if in_submitit_job():
        trainer.add_callback(PreemptionCheckpoint())
