"""Training: TrainingArguments from ``cfg.trainer`` + task facts, the task's Trainer class with the pipeline's
callbacks (throughput, early stopping, batch order), FSDP auto-wrap classes, and the training call."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.errors import ConfigError
from pipeline.families import model_family
from pipeline.infra import distributed
from pipeline.models import methods
from pipeline.training import early_stopping, precision, throughput
from pipeline.training.per_source import per_source_eval
from pipeline.training.sharding import sharding_fixes
from pipeline.training.streams import node_streams
from pipeline.training.sampling import in_order_eval, with_group_order


def training_args(cfg, task, run_dir: Path):
    _, args_class = task.trainer_classes()
    fields = OmegaConf.to_container(cfg.trainer, resolve=True)
    fields.update(output_dir=str(run_dir / "checkpoints"), seed=int(cfg.seed), run_name=str(cfg.name),
                  metric_for_best_model=str(cfg.task.metric), greater_is_better=bool(cfg.task.greater_is_better),
                  **task.training_args_extra())
    if cfg.data.get("mixture") and cfg.data.get("mixture_best"):  # a source's own eval_<source>_<metric>
        fields["metric_for_best_model"] = f"{cfg.data.mixture_best}_{cfg.task.metric}"
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
    peak_flops(fields.pop("peak_flops", None))  # pipeline key (MFU's denominator), checked here, read by build_trainer
    fields = distributed.training_fields(fields)  # pops global_batch_size; use_cpu for multi-process CPU (gloo)
    try:
        return args_class(**fields)
    except TypeError as e:
        raise ConfigError(f"trainer: {e} (the trainer group takes {args_class.__name__} fields)") from e
    except ValueError as e:
        if "requires the save and eval strategy to match" in str(e):  # transformers names its CLI flags here
            raise ConfigError(f"trainer.load_best_model_at_end=true needs trainer.save_strategy to equal "
                              f"trainer.eval_strategy (now {fields.get('save_strategy')} and "
                              f"{fields.get('eval_strategy')}): set both (with +trainer.eval_steps=N "
                              f"+trainer.save_steps=N for steps), or trainer.load_best_model_at_end=false") from e
        raise ConfigError(f"trainer: {' '.join(str(e).split())[:400]}") from e  # one line, all of it


def peak_flops(value):
    """``trainer.peak_flops``: None / auto (pipeline/peaks.py finds the device's peak), a FLOP/s number, 0 (no MFU)."""
    if value is None or value == "auto":
        return None
    try:
        if float(value) >= 0:
            return float(value)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"trainer.peak_flops={value!r}: give the device's peak FLOP/s (e.g. 1.2e12), 0 for no MFU, "
                      f"or auto")


def resolve_auto(fields: dict) -> dict:
    """``auto`` values of the speed settings, in place (pipeline/precision.py): pinned host memory with a GPU; TF32
    on Ampere or newer; bf16 on those GPUs and on CPUs with bf16 matrix units (AMX), with use_cpu=True on a CPU.
    Shared by fine-tuning and the RLHF stage's TRL configs."""
    if any(fields.get(k) == "auto" for k in ("dataloader_pin_memory", "bf16", "tf32")) or fields.get("bf16") is True:
        precision.resolve(fields, **precision.machine())
    return fields


def build_trainer(cfg, task, model, tokenizer, datasets, args):
    # evaluation in dataset order (predictions line up with their rows); training batches in the group order
    trainer_class = node_streams(per_source_eval(with_group_order(in_order_eval(task.trainer_classes()[0]),
                                                     str(cfg.trainer.get("group_order", "sorted")))))
    trainer_class = sharding_fixes(trainer_class)  # FSDP on CPUs, tied embeddings, saves (sharding.py)
    fsdp_wrap(cfg, model)  # FSDP auto-wrap: the family's layer classes (families.py fsdp_layers)
    trainer = trainer_class(model=model, args=args, train_dataset=datasets["train"],
                            eval_dataset=datasets["validation"] if cfg.do_eval else None,
                            processing_class=tokenizer, **task.trainer_kwargs(tokenizer, model))
    if trainer.model_accepts_loss_kwargs and not loss_divides_by_item_count(model):
        trainer.model_accepts_loss_kwargs = False  # see loss_divides_by_item_count
    early_stopping.attach(trainer, cfg)  # trainer.early_stopping_patience: transformers' EarlyStoppingCallback
    # tokens processed / useful, pad fraction, tokens/s, model FLOPs and MFU (pipeline/throughput.py)
    throughput.attach(trainer, peak_flops=peak_flops(cfg.trainer.get("peak_flops")))
    return trainer


_wrap_set_here: str | None = None  # the class list fsdp_wrap last exported (a sweep's next job sets its own)


def fsdp_wrap(cfg, model) -> None:
    """FSDP with transformer-based auto-wrap and no class names in the accelerate config: wrap this family's layer
    classes (pipeline/families.py ``fsdp_layers``), keeping those the model really has. The list goes to accelerate
    through FSDP_TRANSFORMER_CLS_TO_WRAP, which outlives the job: a sweep's next job (another family) must not read
    the previous job's list as the user's (accelerate: "Could not find the transformer layer class GPT2Block")."""
    global _wrap_set_here
    given = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP")
    if not distributed.env_true("ACCELERATE_USE_FSDP") or (given and given != _wrap_set_here):
        return
    if os.environ.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP").upper() != "TRANSFORMER_BASED_WRAP":
        return
    names = wrap_classes(model, model_family(cfg.model).fsdp_layers)
    if not names:
        raise ConfigError(f"FSDP auto-wrap: this {cfg.model.family} model names no layer classes "
                          f"(_no_split_modules) and has no stack of identical blocks; set "
                          f"fsdp_transformer_layer_cls_to_wrap in the accelerate config")
    _wrap_set_here = os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] = ",".join(names)


def wrap_classes(model, no_split: tuple) -> list[str]:
    """The classes FSDP wraps one unit each: the model class's ``_no_split_modules`` that the model has, except a
    class holding the input embeddings (BertModel lists ``BertEmbeddings``): accelerate's fsdp2_prepare_model puts
    the embeddings in a unit of their own after the auto-wrap, and sharding them twice fails in torch 2.13
    ("Invariant encountered: value was None", docs/library-notes.md). A type that lists none (ALBERT, DistilBERT,
    ELECTRA, CTRL, openai-gpt, Marian) gets the block class of its layer stacks (``methods.layer_stacks``)."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    holding = {type(m).__name__ for m in model.modules() if embed is not None and any(x is embed for x in m.modules())}
    present = {type(m).__name__ for m in model.modules()}
    names = [n for n in no_split if n in present and n not in holding]
    return names or sorted({type(stack[0]).__name__ for stack in methods.layer_stacks(model)})


def loss_divides_by_item_count(model) -> bool:
    """Whether the model's loss uses the Trainer's ``num_items_in_batch`` (transformers' ``self.loss_function``).

    transformers 5 passes that count to any model whose ``forward`` takes ``**kwargs`` and then treats the loss as a
    sum divided by the items of the whole batch: it skips the division by gradient-accumulation steps and multiplies
    the loss by the number of processes. Causal LMs hand the kwargs to ``self.loss_function`` and honour the count;
    T5, BART and the BERT-family heads (sequence / token classification, QA) take a plain mean, so their gradients
    would grow with the accumulation steps and the process count (measured: a 2-process classification run
    reported twice the 1-process eval loss). For those the Trainer is told the model takes no loss kwargs."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper: its model
    try:
        return "loss_function" in inspect.getsource(type(base).forward)
    except (OSError, TypeError):  # no source (compiled, dynamic classes): keep transformers' own decision
        return True


def train(trainer, resume_from_checkpoint=None) -> dict:
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return {**result.metrics, **throughput.facts(trainer), **early_stopping.facts(trainer)}
