"""Glue a PEFT method needs around the Trainer: AdaLoRA's rank budget step, the task's label glue for virtual
tokens, and what is saved next to an adapter."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger(__name__)


class AdaLoraBudget(TrainerCallback):
    """AdaLoRA re-allocates ranks from the gradients: ``update_and_allocate(step)`` after every optimizer step, while
    the gradients are still there (Trainer zeroes them after ``on_optimizer_step``)."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)


def peft_type(model) -> str | None:
    config = getattr(model, "active_peft_config", None)
    return None if config is None else str(getattr(config.peft_type, "value", config.peft_type))


def attach(trainer, task) -> None:
    """Add what the trainer's (PEFT) model needs: AdaLoRA's callback; for virtual-token methods, the task's collator
    that keeps its labels in line with the longer input (e.g. NER labels left-padded)."""
    kind = peft_type(trainer.model)
    if kind == "ADALORA":
        trainer.add_callback(AdaLoraBudget())
    if kind in ("PROMPT_TUNING", "P_TUNING"):
        trainer.data_collator = task.virtual_tokens(trainer.data_collator,
                                                    trainer.model.active_peft_config.num_virtual_tokens)


def save_base(model, out_dir: Path) -> None:
    """Next to a PEFT adapter: ``base/config.json`` (the task head's labels) and, when the base exists nowhere
    else (init=scratch), its weights. ``pipeline.models.saved.load_model`` reads them."""
    if peft_type(model) is None:
        return
    base = model.__dict__.get("pipeline_base")
    config = model.get_base_model().config
    config.architectures = [type(model.get_base_model()).__name__]
    if base is not None:
        base.save_pretrained(str(out_dir / "base"))
    else:
        config.save_pretrained(str(out_dir / "base"))
