"""Instruction tuning of a from-config GPT-2 on Alpaca (../shared/data/alpaca): packed rows (examples kept apart by
position ids) against one example per row, on the same examples, the same optimizer steps and ~16 examples per step.

  flock /tmp/heavy.lock python benchmarks/chat_packing.py            # ~15 min on 2 busy CPU cores
  python benchmarks/chat_packing.py --train 200 --steps 30 --seeds 0 # a quick look

Variants (each a fresh `python -m pipeline recipe=gpt2-instruct data=alpaca-local model.init=scratch ...`), per seed:
  packed-512 / packed-256   task.packing=true (bfd), rows of <= 512 / 256 tokens, 3 / 7 rows (~16 examples) per step
  unpacked-grouped          task.packing=false, 16 examples per step in length-grouped batches (the pipeline default)
  unpacked-random           task.packing=false, 16 examples per step in random order (TRL / Trainer defaults)
Prints per run: steps, pad fraction, useful (non-padding) tokens/s, validation response loss at 1/3, 2/3 and the end,
test response loss; writes benchmarks/results/chat_packing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ["model.init=scratch", "model.scratch.hidden_size=128", "model.scratch.num_layers=2",
         "model.scratch.num_heads=4", "model.scratch.intermediate_size=512", "model.scratch.vocab_size=4000",
         "model.scratch.max_positions=512", "model.scratch.dropout=0.0"]


def run(name: str, overrides: list[str], out: Path, threads: int) -> dict:
    run_dir = out / name
    cmd = [sys.executable, "-m", "pipeline", "recipe=gpt2-instruct", "data=alpaca-local", *MODEL, *overrides,
           "logger=none", "quiet=true", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_EVALUATE_OFFLINE": "1"}
    t = time.time()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    m = json.loads((run_dir / "metrics.json").read_text())
    hist = json.loads((run_dir / "log_history.json").read_text())
    evals = [round(r["eval_response_loss"], 4) for r in hist if "eval_response_loss" in r][:-1]  # last: final eval
    # (evaluations during training: per epoch, or every eval_steps)
    steps = max(r.get("step", 0) for r in hist)
    return {"command": " ".join(cmd[2:]), "wall_seconds": round(time.time() - t, 1), "steps": steps,
            "train_rows": m["train_samples"], "pad_fraction": round(m["train_pad_fraction"], 4),
            "useful_tokens_per_second": round(m["train_useful_tokens_per_second"], 1),
            "processed_tokens_per_second": round(m["train_processed_tokens_per_second"], 1),
            "train_loop_seconds": round(m["train_loop_seconds"], 1),
            "eval_response_loss_during_training": evals, "test_response_loss": round(m["test_response_loss"], 4),
            "test_perplexity": round(m["test_perplexity"], 2), "test_response_tokens": m["test_response_tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=2000, help="training rows (first N of train.jsonl)")
    ap.add_argument("--steps", type=int, default=375, help="optimizer steps of every variant (evaluated 3 times)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/chat_packing")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "alpaca"))
    args = ap.parse_args()
    every = max(1, args.steps // 3)
    common = [f"data.dir={args.data_dir}", f"data.max_train_samples={args.train}", f"trainer.max_steps={args.steps}",
              "trainer.learning_rate=1e-3", "trainer.warmup_steps=0.05", "trainer.per_device_eval_batch_size=16",
              "trainer.eval_strategy=steps", "trainer.save_strategy=steps", f"+trainer.eval_steps={every}",
              f"+trainer.save_steps={every}", "num_samples=4"]
    # ~16 examples per step everywhere: packed rows hold ~block / 106 examples (Alpaca's mean length in tokens)
    variants = {
        "packed-512": ["task.packing=true", "task.block_size=512", "trainer.per_device_train_batch_size=3",
                       "trainer.global_batch_size=3", "trainer.train_sampling_strategy=random"],
        "packed-256": ["task.packing=true", "task.block_size=256", "trainer.per_device_train_batch_size=7",
                       "trainer.global_batch_size=7", "trainer.train_sampling_strategy=random"],
        "unpacked-grouped": ["task.packing=false", "task.block_size=512", "trainer.per_device_train_batch_size=16",
                             "trainer.global_batch_size=16", "trainer.train_sampling_strategy=group_by_length"],
        "unpacked-random": ["task.packing=false", "task.block_size=512", "trainer.per_device_train_batch_size=16",
                            "trainer.global_batch_size=16", "trainer.train_sampling_strategy=random"],
    }
    out, results = Path(args.out), {}
    names = list(variants)
    for k, seed in enumerate(args.seeds):  # variants in a rotated order per seed: machine drift hits all alike
        for name in names[k % len(names):] + names[:k % len(names)]:
            results[f"{name}/seed{seed}"] = run(f"{name}-s{seed}", common + variants[name] + [f"seed={seed}"], out,
                                                args.threads)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "chat_packing.json").write_text(json.dumps(results, indent=1) + "\n")
    keys = ("steps", "train_rows", "pad_fraction", "useful_tokens_per_second", "train_loop_seconds",
            "eval_response_loss_during_training", "test_response_loss")
    print("| variant | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
