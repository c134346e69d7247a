"""Streaming against map-style data, and the overhead of a mixture (docs/performance.md "Streaming and mixtures").

A generated corpus of JSON-lines text rows (about 90 words each) at several sizes; each run is ``finetune`` in its
own process (peak RSS is the process's), a tiny from-config GPT-2 (debug=smoke) trained for the same
``trainer.max_steps`` on packed 32-token blocks, no evaluation. Per run, from metrics.json:

- start-up seconds: wall_seconds - train_runtime (read, clean, tokenise, build, save; map-style tokenises everything
  before step 1, streaming reads the head only);
- peak RSS (MB) of the process;
- training tokens/s at equal steps (streaming tokenises inside the loop, so its cost shows here).

Mixture overhead: the same rows as one source, or split into two sources of a ``data.mixture`` (concat, weight 1).
Runs alternate between variants over ``--repeats``; the table shows the median and the spread (min-max).

    python benchmarks/streaming.py                 # ~4 min on 2 cores: 5k / 50k rows map-style (10x), 5k / 500k streamed (100x)
    python benchmarks/streaming.py --quick         # 2k / 200k rows, 1 repeat: the harness only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the quick brown fox jumps over a lazy dog near river bank while small birds sing old songs about "
         "distant mountains and green valleys where farmers grow wheat corn barley and rye each summer").split()


def corpus(path: Path, rows: int, seed: int = 0) -> Path:
    if path.exists():
        return path
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(90))}) + "\n")
    return path


def run(name: str, overrides: list[str], work: Path) -> dict:
    out = work / f"run-{''.join(c if c.isalnum() else '-' for c in name)}-{time.time_ns()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(out) + "-cache", "OMP_NUM_THREADS": "1"}  # a fresh cache: a first run's cost
    t = time.time()
    p = subprocess.run([sys.executable, "-m", "pipeline", *overrides, f"hydra.run.dir={out}"], cwd=work,
                       capture_output=True, text=True, env=env, timeout=900)
    wall = time.time() - t
    if p.returncode:
        raise SystemExit(f"{name}: exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
    m = json.loads((out / "metrics.json").read_text())
    return {"variant": name, "process_seconds": wall, "startup_s": m["wall_seconds"] - m["train_runtime"],
            "peak_rss_mb": m["peak_rss_mb"], "tokens_per_s": m.get("train_tokens_per_second"),
            "train_runtime": m["train_runtime"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "streaming.md"))
    args = ap.parse_args(argv)
    small, large_map, large_stream = (2_000, 20_000, 200_000) if args.quick else (5_000, 50_000, 500_000)
    repeats = args.repeats or (1 if args.quick else 2)
    work = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    files = {n: corpus(work / f"corpus-{n}.jsonl", n) for n in sorted({small, large_map, large_stream})}
    half = work / "half-b.jsonl"
    with open(files[small]) as f, open(work / "half-a.jsonl", "w") as a, open(half, "w") as b:
        for i, line in enumerate(f):
            (a if i % 2 else b).write(line)
    common = ["recipe=gpt2-generation", "debug=smoke", "quiet=true", "logger=none", "do_eval=false", "num_samples=0",
              f"trainer.max_steps={args.steps}", "data.max_train_samples=null", "data.max_eval_samples=null",
              "data.max_test_samples=null", "trainer.save_strategy=no", "trainer.eval_strategy=no",
              "trainer.load_best_model_at_end=false"]
    variants = {
        f"map {small:,}": [f"data.train_file={files[small]}"],
        f"map {large_map:,}": [f"data.train_file={files[large_map]}"],
        f"stream {small:,}": [f"data.train_file={files[small]}", "data.streaming=true"],
        f"stream {large_stream:,}": [f"data.train_file={files[large_stream]}", "data.streaming=true"],
        f"one source {small:,}": [f"data.train_file={files[small]}"],
        f"mixture 2 x {small // 2:,}": [f"data.mixture=[{{name: a, train_file: {work / 'half-a.jsonl'}}}, "
                                        f"{{name: b, train_file: {half}}}]"],
    }
    results = []
    for rep in range(repeats):
        for name, extra in variants.items():
            r = run(name, common + extra, work)
            r["repeat"] = rep
            results.append(r)
            print(f"{name:>22}: start-up {r['startup_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"{r['tokens_per_s'] or 0:,.0f} tokens/s", flush=True)
    lines = [f"# Streaming vs map-style, mixture overhead ({args.steps} steps, {repeats} repeats: median "
             f"[min-max])", "", f"Corpus sizes (MB): " + ", ".join(f"{n:,} rows {p.stat().st_size / 1e6:.1f}"
                                                                    for n, p in files.items()), "",
             "| variant | start-up s | peak RSS MB | tokens/s |", "|---|---|---|---|"]

    def cell(values, fmt):
        return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"

    for name in variants:
        rs = [r for r in results if r["variant"] == name]
        lines.append(f"| {name} | {cell([r['startup_s'] for r in rs], '{:.1f}')} | "
                     f"{cell([r['peak_rss_mb'] for r in rs], '{:.0f}')} | "
                     f"{cell([r['tokens_per_s'] or 0 for r in rs], '{:,.0f}')} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
