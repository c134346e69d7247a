"""``trainer.early_stopping_patience`` / ``early_stopping_threshold``: transformers' EarlyStoppingCallback on the task's
validation metric (``metric_for_best_model`` = ``task.metric``, in the task's direction), and what metrics.json
says about it. The model kept is the best checkpoint (``load_best_model_at_end``), not the last one.

Hooks: ``train.training_args`` calls ``training_fields`` (the two keys are the pipeline's, not TrainingArguments');
``train.build_trainer`` calls ``attach``; ``train.train`` merges ``facts``.
"""

from __future__ import annotations

from transformers import EarlyStoppingCallback

from pipeline.errors import ConfigError


def training_fields(fields: dict, cfg) -> dict:
    """Pop the pipeline's keys; refuse settings under which early stopping cannot work (one line each)."""
    patience = fields.pop("early_stopping_patience", None)
    threshold = fields.pop("early_stopping_threshold", 0.0)
    if patience is None or patience is False:
        return fields
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
        raise ConfigError(f"trainer.early_stopping_patience={patience}: give a whole number of evaluations >= 1, or "
                          f"null to train the full schedule")
    if not isinstance(threshold, (int, float)) or threshold < 0:
        raise ConfigError(f"trainer.early_stopping_threshold={threshold}: give a number >= 0 (the least "
                          f"improvement of {cfg.task.metric} that counts)")
    if fields.get("eval_strategy") in ("no", None):
        raise ConfigError("trainer.early_stopping_patience needs evaluations on the validation split: set "
                          "do_eval=true and trainer.eval_strategy=epoch (or trainer.eval_strategy=steps "
                          "trainer.save_strategy=steps +trainer.eval_steps=N +trainer.save_steps=N)")
    if not fields.get("load_best_model_at_end"):
        raise ConfigError("trainer.early_stopping_patience needs trainer.load_best_model_at_end=true (the model kept "
                          "is the best checkpoint, not the one training stopped at)")
    fields.setdefault("restore_callback_states_from_checkpoint", True)  # a resumed run keeps its patience count
    return fields


def attach(trainer, cfg) -> None:
    patience = cfg.trainer.get("early_stopping_patience")
    if patience:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=int(patience),
                                                   early_stopping_threshold=float(
                                                       cfg.trainer.get("early_stopping_threshold") or 0.0)))


def facts(trainer) -> dict:
    """After training: whether early stopping ended it, at which step, and the step of the checkpoint kept. The
    callback is then removed: the evaluate stage's test-split evaluations are not validation evaluations."""
    cb = next((c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)), None)
    if cb is None:
        return {}
    state = trainer.state
    stopped = cb.early_stopping_patience_counter >= cb.early_stopping_patience and state.global_step < state.max_steps
    best = state.best_model_checkpoint
    trainer.remove_callback(EarlyStoppingCallback)
    return {"early_stopped": bool(stopped), "early_stopped_at_step": state.global_step if stopped else None,
            "early_stopping_patience": cb.early_stopping_patience,
            "early_stopping_threshold": cb.early_stopping_threshold, "planned_steps": state.max_steps,
            "best_step": int(best.rsplit("-", 1)[-1]) if best else None}
