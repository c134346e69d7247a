"""Peak memory of this process: RSS (Linux VmHWM, reset per run) and the GPU's allocator peak."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch


def reset_peak_memory() -> None:
    """Start a run's peak-memory window (runs of a --multirun sweep share one process)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM (peak RSS)
    except OSError:
        pass
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_rss_mb() -> float:
    """Peak RSS since ``reset_peak_memory``: Linux VmHWM; elsewhere ru_maxrss (the process's peak)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)


def peak_memory_mb() -> dict:
    """{peak_rss_mb, peak_gpu_mem_mb (with a GPU)} for metrics.json."""
    out = {"peak_rss_mb": peak_rss_mb()}
    if torch.cuda.is_available():
        out["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out
