"""Peak FLOP/s of the device one process trains on, in the dtype its matmuls run in (the denominator of MFU).

- ``trainer.peak_flops`` (or ``benchmarks/run.py --peak``) given: that number; 0 turns MFU off.
- GPU: the dense datasheet figure of the exact ``torch.cuda.get_device_name()`` (no substring matching: an L40S is
  not an L4), per dtype; an unlisted GPU gets no MFU until a peak is given.
- CPU: measured. A matmul probe (~1 s: the best of a square and a transformer-FFN-like shape) with the process's
  thread count and dtype, cached in ``$HF_HOME/finetune-pipeline/peak-flops.json`` per CPU model, torch version,
  dtype and thread count. A probe taken while other processes keep the CPUs busy (1-minute load average above the
  CPU count) reads low: it is reported as such and not cached. ``python benchmarks/peak.py --write-cache``
  re-measures the cached figures (run it on a quiet machine).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from huggingface_hub import constants

from pipeline.training.precision import cpu_model

# Dense (no sparsity) datasheet FLOP/s by the exact name torch reports. tf32 is fp32 matmuls on tensor cores.
_A100 = dict(bf16=312e12, fp16=312e12, tf32=156e12, fp32=19.5e12)
_H100_SXM = dict(bf16=989e12, fp16=989e12, tf32=494e12, fp32=67e12)
_V100_SXM = dict(fp16=125e12, fp32=15.7e12)
_V100_PCIE = dict(fp16=112e12, fp32=14e12)
GPU_PEAKS = {
    "NVIDIA H200": _H100_SXM,  # same tensor cores and clocks as H100 SXM
    "NVIDIA H100 80GB HBM3": _H100_SXM,
    "NVIDIA H100 PCIe": dict(bf16=756e12, fp16=756e12, tf32=378e12, fp32=51e12),
    "NVIDIA A100-SXM4-80GB": _A100, "NVIDIA A100-SXM4-40GB": _A100,
    "NVIDIA A100-PCIE-40GB": _A100, "NVIDIA A100 80GB PCIe": _A100,
    "NVIDIA L40S": dict(bf16=362e12, fp16=362e12, tf32=183e12, fp32=91.6e12),
    "NVIDIA L4": dict(bf16=121e12, fp16=121e12, tf32=60e12, fp32=30.3e12),
    "NVIDIA A10": dict(bf16=125e12, fp16=125e12, tf32=62.5e12, fp32=31.2e12),
    "Tesla T4": dict(fp16=65e12, fp32=8.1e12),
    "Tesla V100-SXM2-16GB": _V100_SXM, "Tesla V100-SXM2-32GB": _V100_SXM,
    "Tesla V100-PCIE-16GB": _V100_PCIE, "Tesla V100-PCIE-32GB": _V100_PCIE,
}
PROBE_SHAPES = ((2048, 2048, 2048), (2048, 384, 1536))  # (m, k, n): square; MiniLM's FFN at 2,048 tokens
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
SLOW_PRODUCT_SECONDS = 1.0  # measure_matmul: a probe product slower than this is timed on a 16-row slice


def _on_gpu(args=None) -> bool:
    return torch.cuda.is_available() and not getattr(args, "use_cpu", False)


def compute_dtype(args=None) -> str:
    """The dtype the training matmuls run in: bf16 / fp16 (mixed precision), tf32 (fp32 on tensor cores), fp32."""
    if getattr(args, "bf16", False):
        return "bf16"
    if getattr(args, "fp16", False):
        return "fp16"
    if _on_gpu(args):
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    return "fp32"


def gpu_peak(name: str, dtype: str) -> float | None:
    """Datasheet peak of the GPU called exactly ``name`` in ``dtype`` (None: unlisted GPU or dtype)."""
    return GPU_PEAKS.get(name, {}).get(dtype)


def measure_matmul(dtype: str, threads: int, shapes=PROBE_SHAPES, seconds: float = 0.3) -> float:
    """Best FLOP/s of ``torch.matmul`` over ``shapes`` in ``dtype`` on ``threads`` CPU threads.

    Each shape is first timed on a slice of 16 of its rows (same inner and outer sizes: the same kernels). Where the
    whole shape would take longer than ``SLOW_PRODUCT_SECONDS`` per product, the slice's rate is the figure: a slow
    path (bf16 on a CPU without bf16 matrix units, e.g. an AMD EPYC without AMX: ~1.3 GFLOP/s, 13 s per 2048^3
    product) is measured in a fraction of a second instead of minutes."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best = 0.0
        for m, k, n in shapes:
            a = torch.randn(m, k, dtype=getattr(torch, DTYPES[dtype]))
            b = torch.randn(k, n, dtype=a.dtype)
            part = a[:16]
            t0 = time.perf_counter()
            part @ b  # also the warm-up: kernel creation is counted against a slow path, not a fast one
            sliced = time.perf_counter() - t0
            if sliced * m / part.shape[0] > SLOW_PRODUCT_SECONDS:
                best = max(best, 2 * part.shape[0] * k * n / sliced)
                continue
            a @ b  # warm-up of the whole shape
            t0, runs = time.perf_counter(), 0
            while runs < 2 or time.perf_counter() - t0 < seconds:
                a @ b
                runs += 1
            best = max(best, 2 * m * k * n * runs / (time.perf_counter() - t0))
        return best
    finally:
        torch.set_num_threads(before)


def cache_file() -> Path:
    return Path(os.environ.get("HF_HOME") or constants.HF_HOME) / "finetune-pipeline" / "peak-flops.json"


def write_cache(values: dict) -> Path:
    """Merge {cache key: FLOP/s} into the cache file (benchmarks/peak.py --write-cache, the harness)."""
    path = cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    cache.update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def cpu_key(dtype: str, threads: int) -> str:
    return f"{cpu_model()} | torch {torch.__version__.split('+')[0]} | {dtype} | {threads} threads"


def cpu_peak(dtype: str, threads: int | None = None, refresh: bool = False) -> tuple[float, str]:
    """(FLOP/s, source) of this CPU, from the cache or a fresh probe (written to the cache)."""
    threads = threads or torch.get_num_threads()
    key, path = cpu_key(dtype, threads), cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache and not refresh:
        return cache[key], f"measured matmul: {key}"
    value, load = measure_matmul(dtype, threads), os.getloadavg()[0]
    if load > (os.cpu_count() or 1) + 0.5:
        return value, f"measured matmul on a busy machine (load {load:.1f}, not cached): {key}"
    write_cache({key: value})
    return value, f"measured matmul: {key}"


def peak_flops(dtype: str, override=None, args=None) -> tuple[float | None, str]:
    """(peak FLOP/s of this process's device in ``dtype``, where the figure comes from). None: no MFU."""
    if override is not None:
        value = float(override)
        return (value, "given") if value > 0 else (None, "off (peak_flops=0)")
    if _on_gpu(args):
        name = torch.cuda.get_device_name()
        value = gpu_peak(name, dtype)
        if value is None:
            return None, f"no datasheet peak for {name!r} in {dtype}: set trainer.peak_flops"
        return value, f"datasheet: {name}, dense {dtype}"
    try:
        return cpu_peak(dtype)
    except Exception as e:  # the figure is a report, never a reason to fail a finished training run
        return None, f"CPU probe failed: {e}"
