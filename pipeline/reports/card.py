"""What the report stage writes: the run facts of metrics.json and the model card (model/README.md)."""

from __future__ import annotations

import importlib.metadata as md
import platform
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData
from omegaconf import OmegaConf

from pipeline.integrations import scrub
from pipeline.models.methods import count_parameters
from pipeline.tasks import task_class
from pipeline.training.memory import peak_memory_mb

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "peft", "trl", "evaluate", "hydra-core", "tokenizers")


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def run_facts(cfg, model, task, raw, tokenized, train_metrics: dict, world_size: int) -> dict:
    trainable, total = count_parameters(model)
    facts = {
        "task": cfg.task.name, "model": str(cfg.model.name_or_path or f"a tiny {cfg.model.family} from config"),
        "family": cfg.model.family,
        "init": cfg.model.init, "method": cfg.method.name, "seed": int(cfg.seed), "world_size": world_size,
        "trainable_params": trainable, "total_params": total, "trainable_ratio": trainable / max(1, total),
        "train_samples": len(tokenized["train"]), "dataset_fingerprint": {k: v._fingerprint for k, v in raw.items()},
        "versions": package_versions(), **peak_memory_mb(),
    }
    sps = train_metrics.get("train_samples_per_second")
    if sps:
        facts["train_tokens_per_second"] = sps * task.tokens_per_sample(tokenized["train"])
    return facts


CARD_HPARAMS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "weight_decay", "warmup_steps", "lr_scheduler_type", "bf16")


def _hub_id(name: str) -> str | None:
    """A Hub id (``org/name`` or ``name``), not a local path or a packaged model."""
    return None if name.startswith(("/", ".", "~", "pkg://")) or "\\" in name else name


def model_card(cfg, metrics: dict, command: str, adapter: bool | None = None) -> str:
    """model/README.md in the Hub's format: YAML metadata (base_model, datasets, tags, model-index) and a body with
    the base model, task, data, method, hyperparameters, every metric and the command that reproduces the run.
    Absolute local paths become ``<local>/<name>``, values of secret-named keys ``<redacted>`` (pipeline/scrub.py)."""
    task, method, data = cfg.task.name, cfg.method, cfg.data
    tag = task_class(str(task)).pipeline_tag
    if adapter is None:  # as methods.method_kind infers it
        adapter = method.get("kind") == "peft" or (not method.get("kind") and bool(method.get("peft_type")))
    pretrained = cfg.model.init == "pretrained"
    data_id = str(data.path) if data.source == "hub" and data.path else None
    files = " / ".join(str(data[k]) for k in ("train_file", "validation_file", "test_file") if data.get(k))
    metric, metric_type = str(cfg.task.get("report_metric") or cfg.task.metric), task_class(str(task)).card_metric_type
    value = metrics.get(f"test_{metric}")
    results = None
    if isinstance(value, float):
        results = [EvalResult(task_type=tag, dataset_type=data_id or str(data.source),
                              dataset_name=data_id or (Path(str(data.train_file)).parent.name if data.get("train_file")
                                                       else str(data.source)), dataset_config=data.get("config_name"),
                              dataset_split="test", metric_type=metric_type, metric_name=f"test {metric}",
                              metric_value=round(value, 4))]
    meta = ModelCardData(base_model=_hub_id(str(cfg.model.name_or_path)) if pretrained else None,
                         datasets=[data_id] if data_id else None, eval_results=results, model_name=str(cfg.name),
                         library_name="peft" if adapter else "transformers", pipeline_tag=tag,
                         tags=[task, str(method.name), str(cfg.model.family), "finetune-pipeline"])
    base = f"`{cfg.model.name_or_path}`" if pretrained else \
        f"a tiny {cfg.model.family} built from config (model.init=scratch, tokenizer trained on the data)"
    source = f"`{data_id}`" + (f" ({data.config_name})" if data.get("config_name") else "") if data_id else \
        (files or f"source={data.source}")
    if data.get("max_train_samples"):
        source += f", capped at data.max_train_samples={data.max_train_samples}"
    extra = {k: v for k, v in OmegaConf.to_container(method, resolve=True).items() if k not in ("name", "kind")}
    how = "PEFT adapter (this folder: the adapter; base/: the base model's config)" if adapter else "full model weights"
    hp = ", ".join(f"{k}={cfg.trainer[k]}" for k in CARD_HPARAMS if k in cfg.trainer)
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in sorted(metrics.items())
                     if k.startswith(("test_", "eval_", "train_")) and isinstance(v, (int, float)))
    load = "pipeline.export.load_model(model_dir)" if adapter else "AutoModelFor...from_pretrained(model_dir)"

    return scrub.text(f"""---
{meta.to_yaml()}
---
# {cfg.name}: {cfg.model.family} fine-tuned for {task}

- **Base model:** {base}
- **Task:** {task} (`{tag}`); checkpoint selection by {cfg.task.metric}
- **Data:** {source}; {metrics.get("train_samples", "?")} training samples
- **Method:** {method.name}: {how}{"; " + ", ".join(f"{k}={v}" for k, v in extra.items()) if extra else ""}
- **Hyperparameters:** {hp}, seed={cfg.seed}
- **Parameters:** {metrics.get("trainable_params", "?")} trainable of {metrics.get("total_params", "?")}

## Metrics
| metric | value |
|---|---|
{rows}

## Use
```
finetune-predict <run dir> --text "..."
```
or in Python: `{load}`.

## Reproduce
```
{command}
```
""")  # the card is published: no local paths, no secrets
