"""Evaluate stage: validation + test metrics from real predictions, and samples written to the run directory."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.training.sharding import whole_model


def evaluate(trainer, task, tokenizer, raw, tokenized, num_samples: int, run_dir: Path | None) -> dict:
    metrics = {}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        metrics.update(task.evaluate(trainer, raw[split], tokenized[split], prefix))
    if num_samples > 0 and run_dir is not None:
        with whole_model(trainer):  # ZeRO-3: generation from the whole model (training/sharding.py)
            rows = task.samples(trainer, tokenizer, raw["test"], tokenized["test"], num_samples)
        if trainer.is_world_process_zero():
            with open(run_dir / "samples.jsonl", "w") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return metrics


def per_source(trainer, task, raw: dict, tokenized: dict) -> dict:
    """data.mixture: each source's validation and test metrics on their own (``eval_<source>_<metric>``,
    ``test_<source>_<metric>``; the key names transformers gives a dict of eval datasets)."""
    metrics = {}
    for name in raw:
        for split, prefix in (("validation", "eval"), ("test", "test")):
            metrics.update(task.evaluate(trainer, raw[name][split], tokenized[name][split], f"{prefix}_{name}"))
    return metrics
