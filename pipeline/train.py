"""Train stage: TrainingArguments from ``cfg.trainer`` + task facts, the task's Trainer class, and the run."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from pipeline import distributed, early_stopping
from pipeline.errors import ConfigError


def training_args(cfg, task, run_dir: Path):
    _, args_class = task.trainer_classes()
    fields = OmegaConf.to_container(cfg.trainer, resolve=True)
    fields.update(output_dir=str(run_dir / "checkpoints"), seed=int(cfg.seed), run_name=str(cfg.name),
                  metric_for_best_model=str(cfg.task.metric), greater_is_better=bool(cfg.task.greater_is_better),
                  **task.training_args_extra())
    resolve_auto(fields)
    if not cfg.do_eval:
        fields.update(eval_strategy="no", load_best_model_at_end=False)
    fields.setdefault("logging_nan_inf_filter", False)  # guards.NonFiniteGuard must see NaN/inf losses
    if fields.get("push_to_hub") and fields.get("hub_private_repo") is None:
        fields["hub_private_repo"] = True  # pushes are private unless trainer.hub_private_repo=false
    if fields.get("report_to") in ("none", None, [], ["none"]):
        fields["report_to"] = "none"  # TensorBoard's folder is set per run by tracking.setup
    fields.pop("group_order", None)  # pipeline key, read by build_trainer (pipeline/sampling.py)
    early_stopping.training_fields(fields, cfg)  # pops early_stopping_*; checks eval / save / best-model settings
    fields = distributed.training_fields(fields)  # pops global_batch_size; use_cpu for multi-process CPU (gloo)
    try:
        return args_class(**fields)
    except TypeError as e:
        raise ConfigError(f"trainer: {e} (the trainer group takes {args_class.__name__} fields)") from e
    except ValueError as e:
        raise ConfigError(f"trainer: {' '.join(str(e).split())[:400]}") from e  # one line, all of it


def resolve_auto(fields: dict) -> dict:
    """``auto`` values of the GPU-only speed-ups, in place: pinned host memory on a GPU; bf16 autocast and TF32
    matmuls on Ampere or newer. Shared by fine-tuning and the RLHF stage's TRL configs."""
    auto = [k for k in ("dataloader_pin_memory", "bf16", "tf32") if fields.get(k) == "auto"]
    if auto:
        import torch

        gpu = torch.cuda.is_available()
        ampere = gpu and torch.cuda.get_device_capability()[0] >= 8
        resolved = {"dataloader_pin_memory": gpu, "tf32": True if ampere else None,
                    "bf16": bool(ampere and torch.cuda.is_bf16_supported() and not fields.get("fp16"))}
        fields.update({k: resolved[k] for k in auto})
    return fields


def build_trainer(cfg, task, model, tokenizer, datasets, args):
    from pipeline import throughput

    from pipeline.sampling import with_group_order

    trainer_class = with_group_order(task.trainer_classes()[0], str(cfg.trainer.get("group_order", "sorted")))
    distributed.fsdp_wrap(cfg, model)  # FSDP auto-wrap: the family's layer classes (families.py fsdp_layers)
    trainer = trainer_class(model=model, args=args, train_dataset=datasets["train"],
                            eval_dataset=datasets["validation"] if cfg.do_eval else None,
                            processing_class=tokenizer, **task.trainer_kwargs(tokenizer, model))
    throughput.attach(trainer)  # tokens processed / useful, pad fraction, tokens/s (pipeline/throughput.py)
    early_stopping.attach(trainer, cfg)  # trainer.early_stopping_patience: transformers' EarlyStoppingCallback
    return trainer


def train(trainer, resume_from_checkpoint=None) -> dict:
    from pipeline import throughput

    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return {**result.metrics, **throughput.facts(trainer), **early_stopping.facts(trainer)}
