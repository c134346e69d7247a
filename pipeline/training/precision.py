"""What ``auto`` means for the speed settings (``trainer.bf16``, ``trainer.tf32``, ``trainer.dataloader_pin_memory``),
as pure functions of the machine's facts, so the choice is testable with given facts.

- bf16 on a GPU: Ampere or newer with bf16 support (and fp16 not asked for).
- bf16 on a CPU: only where the CPU has bf16 *matrix* units, i.e. Intel AMX (``amx_bf16`` in /proc/cpuinfo).
  Measured on this project's machines (benchmarks/results/precision.md): one thread, torch.matmul, AMX bf16 ~1,000
  GFLOP/s vs fp32 ~150; with oneDNN capped below AMX (``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``, i.e. what an
  ``avx512_bf16``-only CPU gets) bf16 fell to ~75, half of fp32. So ``avx512_bf16`` alone does not turn bf16 on.
  A CPU run in bf16 also needs ``use_cpu=True`` (transformers refuses bf16 without a GPU otherwise); the resolver
  adds it whenever bf16 ends up on and no GPU is there.
- TF32 matmuls: Ampere or newer GPUs.
- Pinned host memory: only with a GPU.
"""

from __future__ import annotations

import platform
from typing import Iterable

import torch

# CPU flags (Linux /proc/cpuinfo spelling) that mean bf16 matrix units. AMX only: see the module docstring.
BF16_MATRIX_FLAGS = frozenset({"amx_bf16"})
AUTO_KEYS = ("dataloader_pin_memory", "bf16", "tf32")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's feature flags (x86 ``flags`` or ARM ``Features`` line); empty where unreadable (non-Linux)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (platform.processor() elsewhere)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass

    return platform.processor() or platform.machine()


def cpu_has_bf16_units(flags: Iterable[str]) -> bool:
    """True where bf16 matmuls run on matrix units (faster than fp32), False where they would be emulated."""
    return bool(BF16_MATRIX_FLAGS & set(flags))


def resolve(fields: dict, *, cuda: bool, capability: tuple[int, int] | None = None, cuda_bf16: bool = False,
            flags: Iterable[str] = (), other_accelerator: bool = False) -> dict:
    """Replace the ``auto`` values of ``fields`` in place, given the machine: ``cuda`` (a CUDA GPU is used),
    ``capability`` (its compute capability), ``cuda_bf16`` (torch.cuda.is_bf16_supported()), ``flags`` (CPU flags),
    ``other_accelerator`` (MPS / XPU...: auto stays off there, as before). Adds ``use_cpu=True`` when bf16 is on
    and training runs on the CPU (transformers' requirement). Returns ``fields``."""
    ampere = cuda and capability is not None and capability[0] >= 8
    on_cpu = not cuda and not other_accelerator
    if fields.get("dataloader_pin_memory") == "auto":
        fields["dataloader_pin_memory"] = cuda
    if fields.get("tf32") == "auto":
        fields["tf32"] = True if ampere else None
    if fields.get("bf16") == "auto":
        units = (ampere and cuda_bf16) if cuda else on_cpu and cpu_has_bf16_units(flags)
        fields["bf16"] = bool(units and not fields.get("fp16"))
    if fields.get("bf16") is True and on_cpu:
        fields["use_cpu"] = True
    return fields


def machine() -> dict:
    """The facts ``resolve`` needs, read from this machine."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    other = bool((mps is not None and mps.is_available()) or (hasattr(torch, "xpu") and torch.xpu.is_available()))
    return {"cuda": cuda, "capability": torch.cuda.get_device_capability() if cuda else None,
            "cuda_bf16": bool(cuda and torch.cuda.is_bf16_supported()), "flags": cpu_flags(),
            "other_accelerator": other}
