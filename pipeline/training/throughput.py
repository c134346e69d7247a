"""Training throughput facts for metrics.json: tokens processed vs useful (non-padding) tokens, pad fraction,
tokens/s, model FLOP/s and MFU, start-up time and memory.

``attach(trainer)`` registers a forward pre-hook on the model that counts, for every forward pass made in training
mode (evaluation batches are not counted), the tokens of the collated batch exactly as the model receives them:

- processed = ``input_ids.numel()`` (+ ``decoder_input_ids`` / ``labels`` numel for encoder-decoder models)
- useful    = ``attention_mask.sum()`` (+ ``labels != -100`` for encoder-decoder models); packed rows without a mask
  (``position_ids`` restarting per example): all tokens but each row's padding tail, a run of position-0 tokens

Counts stay on the model's device until the end of training (no host sync per step). ``facts(trainer)`` returns the
figures; train.py adds them to the train metrics. Counts are per process (one rank under DDP) and cover this
session's steps only (a resumed run counts from the resume).

MFU = this process's model FLOP/s / the peak FLOP/s of one device in the dtype the matmuls run in (pipeline/peaks.py:
a datasheet figure for GPUs named exactly, a measured matmul probe on CPUs, or ``trainer.peak_flops``). Model FLOPs
(pipeline/flops.py) are counted from the shapes of each training batch: 6 FLOPs per weight per token for trainable
matmul weights, 4 for frozen ones (no weight gradient), plus attention scores; padding positions count (they are
computed), so useful MFU is about ``mfu * (1 - train_pad_fraction)``.
"""

from __future__ import annotations

import time

import psutil
import torch
from transformers import TrainerCallback

from pipeline.training import peaks
from pipeline.training.memory import peak_rss_mb
from pipeline.training.flops import FlopPlan


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2 ** 20


class ThroughputMeter(TrainerCallback):
    """Counts tokens seen in training forwards and times the training loop."""

    def __init__(self, model, peak_flops=None):
        self.encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        self.processed, self.useful, self.forwards = 0, None, 0
        self.plan, self.flops, self.peak_override = FlopPlan(model), 0, peak_flops
        self.t0 = self.t1 = self._ready = None
        self.data_wait = 0.0  # loop time between a step's end (or the loop's start) and the next forward: batches
        self.paused = self._paused_at_t1 = 0.0  # evaluation and checkpoint saving inside the loop (not training)
        self.rss_at_train_begin = None

        # Under torch.compile the hook runs eagerly (a graph break before the model) instead of being traced.
        self.handle = model.register_forward_pre_hook(torch.compiler.disable(self._count), with_kwargs=True)

    def _count(self, module, args, kwargs):
        if not module.training:
            return None
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is None:
            return None
        if self._ready is not None:
            self.data_wait += time.time() - self._ready
            self._ready = None
        pos = kwargs.get("position_ids")
        if mask is not None:
            useful = mask.sum()
        elif pos is not None and pos.dim() == 2:  # packed rows (pipeline/tasks/packing.py): the padding tail is the
            useful = ids.numel() - ((pos.flip(-1) != 0).cumsum(-1) == 0).sum()  # trailing run of position-0 tokens
        else:
            useful = ids.numel()
        self.processed += ids.numel()
        labels = kwargs.get("labels")
        target = kwargs.get("decoder_input_ids", labels) if self.encoder_decoder else None
        self.flops += self.plan.batch_flops(tuple(ids.shape), tuple(target.shape) if target is not None else None)
        if self.encoder_decoder:
            if target is not None:
                self.processed += target.numel()
                useful = useful + ((labels != -100).sum() if labels is not None else target.numel())
        self.useful = useful if self.useful is None else self.useful + useful
        self.forwards += 1
        return None

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = self._ready = time.time()
        self.rss_at_train_begin = _rss_mb()

    def on_step_end(self, args, state, control, **kwargs):
        self.t1 = self._ready = time.time()  # the last one ends the loop (later logging / saving / on_train_end work is not in it)
        self._paused_at_t1 = self.paused

    def _pause(self):  # an evaluation or a checkpoint save just ended: its time is not training time
        if self._ready is not None:
            now = time.time()
            self.paused += now - self._ready
            self._ready = now

    def on_evaluate(self, args, state, control, **kwargs):
        self._pause()

    def on_save(self, args, state, control, **kwargs):
        self._pause()

    def train_seconds(self) -> float:
        """Training time of this session up to the last step's end, evaluations and checkpoint saves left out."""
        return self.t1 - self.t0 - self._paused_at_t1

    def on_log(self, args, state, control, **kwargs):
        # log_history rows (train loss, eval metrics) get the training time so far: time-to-quality curves
        if self.t1 is not None and state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].setdefault("train_seconds", round(self.train_seconds(), 3))

    def facts(self, args=None) -> dict:
        if self.t0 is None or self.t1 is None or not self.forwards:
            return {}

        elapsed = max(self.train_seconds(), 1e-9)
        useful = int(self.useful) if self.useful is not None else 0
        out = {
            "train_loop_seconds": elapsed,  # first step's start -> last step's end, less evaluations and saves
            "train_data_wait_seconds": self.data_wait,  # loading + collating batches (the rest is the model's step)
            "train_tokens_processed": self.processed,
            "train_tokens_useful": useful,
            "train_pad_fraction": 1.0 - useful / max(1, self.processed),
            "train_processed_tokens_per_second": self.processed / elapsed,
            "train_useful_tokens_per_second": useful / elapsed,
            "startup_seconds": self.t0 - psutil.Process().create_time(),  # process start -> first training step
            "rss_at_train_begin_mb": self.rss_at_train_begin,
            "peak_rss_mb_at_train_end": peak_rss_mb(),
        }
        if self.flops:
            out["train_model_flops"] = float(self.flops)  # this process, this session
            out["train_model_flops_per_second"] = self.flops / elapsed
            dtype = peaks.compute_dtype(args)
            peak, source = peaks.peak_flops(dtype, override=self.peak_override, args=args)
            out.update(peak_flops=peak, peak_flops_source=source, compute_dtype=dtype)
            if peak:
                out["mfu"] = out["train_model_flops_per_second"] / peak
        return out


def attach(trainer, peak_flops=None) -> ThroughputMeter:
    """Count tokens of every training forward of ``trainer.model`` and time its training loop. ``peak_flops``: the
    device's peak FLOP/s for MFU (None: pipeline/peaks.py finds it; 0: no MFU)."""
    meter = ThroughputMeter(trainer.model, peak_flops)
    trainer.add_callback(meter)
    return meter


def facts(trainer) -> dict:
    """The figures of the meter attached to ``trainer`` ({} when none is attached or nothing trained)."""
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, ThroughputMeter):
            return cb.facts(trainer.args)
    return {}
