"""Report stage: metrics.json (metrics + run facts) and the model card, written only by the main process."""

from __future__ import annotations

import importlib.metadata as md
import platform
import resource
import sys
from pathlib import Path

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "peft", "trl", "evaluate", "hydra-core", "tokenizers")


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def reset_peak_memory() -> None:
    """Start a run's peak-memory window (runs of a --multirun sweep share one process)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM (peak RSS)
    except OSError:
        pass
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb() -> dict:
    """Peak RSS since reset_peak_memory (Linux VmHWM; elsewhere ru_maxrss, the process's peak) and GPU peak."""
    status = Path("/proc/self/status")
    hwm = [l for l in status.read_text().splitlines() if l.startswith("VmHWM:")] if status.is_file() else []
    if hwm:
        out = {"peak_rss_mb": int(hwm[0].split()[1]) / 1024}
    else:
        out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)}
    import torch

    if torch.cuda.is_available():
        out["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def run_facts(cfg, model, task, raw, tokenized, train_metrics: dict, world_size: int) -> dict:
    from pipeline.methods import count_parameters

    trainable, total = count_parameters(model)
    facts = {
        "task": cfg.task.name, "model": str(cfg.model.name_or_path), "family": cfg.model.family,
        "init": cfg.model.init, "method": cfg.method.name, "seed": int(cfg.seed), "world_size": world_size,
        "trainable_params": trainable, "total_params": total, "trainable_ratio": trainable / max(1, total),
        "train_samples": len(tokenized["train"]), "dataset_fingerprint": {k: v._fingerprint for k, v in raw.items()},
        "versions": package_versions(), **peak_memory_mb(),
    }
    sps = train_metrics.get("train_samples_per_second")
    if sps:
        facts["train_tokens_per_second"] = sps * task.tokens_per_sample(tokenized["train"])
    return facts


def model_card(cfg, metrics: dict, command: str) -> str:
    keys = [k for k in sorted(metrics) if k.startswith(("test_", "eval_")) and isinstance(metrics[k], float)]
    rows = "\n".join(f"| {k} | {metrics[k]:.4f} |" for k in keys)
    base = cfg.model.name_or_path if cfg.model.init == "pretrained" else f"scratch {cfg.model.family} (tiny config)"
    tag = {"ner": "token-classification", "generation": "text-generation", "summarization": "summarization"}[cfg.task.name]
    return f"""---
library_name: {'peft' if cfg.method.get('kind') == 'peft' else 'transformers'}
pipeline_tag: {tag}
base_model: {base if cfg.model.init == 'pretrained' and not str(base).startswith('pkg://') else 'null'}
tags: [{cfg.task.name}, {cfg.method.name}]
---
# {cfg.name}: {cfg.model.family} fine-tuned for {cfg.task.name}

- base model: `{base}`
- task: {cfg.task.name}; method: {cfg.method.name}
- data: source={cfg.data.source} {cfg.data.path or cfg.data.train_file or ''}
- learning rate {cfg.trainer.learning_rate}, epochs {cfg.trainer.num_train_epochs}, batch {cfg.trainer.per_device_train_batch_size}, seed {cfg.seed}

## Metrics
| metric | value |
|---|---|
{rows}

## Reproduce
```
{command}
```
"""
