"""This machine's matmul peak: torch.matmul FLOP/s in fp32 and bf16, on 1 and 2 threads, for square shapes and the
shapes of the models the benchmarks train (MiniLM, the scratch T5 / GPT-2). The denominator of MFU on CPUs.

  flock /tmp/heavy.lock python benchmarks/peak.py                 # -> benchmarks/results/peak.md / .json
  flock /tmp/heavy.lock python benchmarks/peak.py --write-cache   # also refresh the pipeline's cached probe

Every figure is the best of --reps timed windows (a busy machine only lowers a window, never raises it). The
pipeline's own probe (pipeline/training/peaks.py) takes the best of the first two shapes; --write-cache stores those
best-of-reps figures for the thread counts measured here. Also measured: bf16 with oneDNN capped below AMX
(ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16), what a CPU with avx512_bf16 but no AMX gets: the reason bf16=auto needs AMX.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {  # name: (m, k, n), m = tokens of a batch
    "square 2048": (2048, 2048, 2048),
    "MiniLM FFN up, 2048 tokens (2048x384 @ 384x1536)": (2048, 384, 1536),
    "square 1024": (1024, 1024, 1024),
    "MiniLM FFN up, one batch (640x384 @ 384x1536)": (640, 384, 1536),
    "MiniLM attention proj, one batch (640x384 @ 384x384)": (640, 384, 384),
    "scratch T5/GPT-2 FFN, one batch (2048x128 @ 128x512)": (2048, 128, 512),
}


def measure(dtype: str, threads: int, reps: int, seconds: float) -> dict:
    from pipeline.training.peaks import measure_matmul

    return {name: max(measure_matmul(dtype, threads, shapes=(shape,), seconds=seconds) for _ in range(reps))
            for name, shape in SHAPES.items()}


def seed_cache(threads_list, reps: int = 3) -> dict:
    """Best-of-``reps`` probes (pipeline/training/peaks.py's shapes) for fp32 and bf16 at each thread count, written to the
    pipeline's cache under the current HF_HOME: the peak every later run of a benchmark reads."""
    from pipeline.training import peaks

    values = {peaks.cpu_key(d, t): max(peaks.measure_matmul(d, t) for _ in range(reps))
              for t in threads_list for d in ("fp32", "bf16")}
    peaks.write_cache(values)
    return values


def capped_bf16(threads: int, seconds: float) -> float:
    """bf16 FLOP/s (square 2048) in a fresh process with oneDNN limited to AVX512_CORE_BF16 (no AMX)."""
    code = ("import sys; sys.path.insert(0, %r); from pipeline.training.peaks import measure_matmul; "
            "print(measure_matmul('bf16', %d, shapes=((2048, 2048, 2048), (2048, 384, 1536)), seconds=%r))"
            % (str(ROOT), threads, seconds))
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}
    return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout.split()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=float, default=0.3, help="length of one timed window per shape")
    p.add_argument("--write-cache", action="store_true", help="store the figures in the pipeline's probe cache")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "peak"))
    args = p.parse_args(argv)
    import torch

    from pipeline.training import peaks
    from pipeline.training import precision

    t0 = time.time()
    result = {"command": "python benchmarks/peak.py " + " ".join(sys.argv[1:]), "cpu": precision.cpu_model(),
              "cpus": os.cpu_count(), "bf16_matrix_units": precision.cpu_has_bf16_units(precision.cpu_flags()),
              "torch": torch.__version__, "platform": platform.platform(), "load_average_start": os.getloadavg(),
              "figures": {}, "capped_bf16_no_amx": {}}
    for threads in args.threads:
        for dtype in ("fp32", "bf16"):
            result["figures"][f"{dtype}, {threads} thread(s)"] = measure(dtype, threads, args.reps, args.seconds)
            print(dtype, threads, result["figures"][f"{dtype}, {threads} thread(s)"], flush=True)
        result["capped_bf16_no_amx"][str(threads)] = max(capped_bf16(threads, args.seconds) for _ in range(args.reps))
    result["load_average_end"], result["seconds"] = os.getloadavg(), time.time() - t0
    if args.write_cache:
        result["cache_written"] = str(peaks.write_cache({
            peaks.cpu_key(dtype, threads): max(list(result["figures"][f"{dtype}, {threads} thread(s)"].values())[:2])
            for threads in args.threads for dtype in ("fp32", "bf16")}))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))


def markdown(r: dict) -> str:
    cols = list(r["figures"])
    lines = ["# Matmul peak of this machine (torch.matmul, GFLOP/s)", "",
             f"`{r['command']}` — {r['cpu']}, {r['cpus']} CPUs, bf16 matrix units (AMX): {r['bf16_matrix_units']}, "
             f"torch {r['torch']}; load average at start {tuple(round(x, 1) for x in r['load_average_start'])}, "
             f"at end {tuple(round(x, 1) for x in r['load_average_end'])}. Best of the timed windows.", "",
             "| shape (m x k @ k x n) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for shape in SHAPES:
        lines.append(f"| {shape} | " + " | ".join(f"{r['figures'][c][shape] / 1e9:.0f}" for c in cols) + " |")
    lines += ["", "bf16 with oneDNN capped below AMX (`ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`: an avx512_bf16 CPU "
              "without AMX), best of square 2048 and MiniLM FFN: " + ", ".join(
                  f"{v / 1e9:.0f} GFLOP/s on {t} thread(s)" for t, v in r["capped_bf16_no_amx"].items()) + ".", ""]
    lines.append("The pipeline's CPU peak (pipeline/training/peaks.py) is the best of the first two rows for the run's dtype "
                 "and thread count.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
