"""Metric modules shipped with the package and loaded by local path through ``evaluate`` (no Hub needed).

Each folder holds ``<name>.py`` with an ``evaluate.Metric``. ``import evaluate`` costs seconds: only the
evaluation code paths import this.
"""

from __future__ import annotations

import functools
from pathlib import Path

HERE = Path(__file__).resolve().parent
METRICS = ("seqeval", "rouge", "perplexity", "accuracy_f1", "sacrebleu", "squad")


@functools.lru_cache(maxsize=None)
def load_metric(name: str):
    import evaluate

    if name not in METRICS:
        raise KeyError(f"unknown metric {name}; shipped metrics: {METRICS}")
    return evaluate.load(str(HERE / name))
