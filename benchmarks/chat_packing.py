"""Instruction tuning of a from-config GPT-2 on Alpaca (../shared/data/alpaca): packed rows (examples kept apart by
position ids) against one example per row, on the same examples for the same epochs at ~the same examples per step.

  flock /tmp/heavy.lock python benchmarks/chat_packing.py            # ~15-25 min on 2 busy CPU cores
  python benchmarks/chat_packing.py --train 400 --epochs 1           # a quick look

Variants (each a fresh `python -m pipeline recipe=gpt2-instruct data=alpaca-local model.init=scratch ...`):
  packed     task.packing=true (bfd), rows of <= block_size tokens, batch = rows holding ~16 examples, random order
  unpacked   task.packing=false, batch 16 examples, length-grouped batches (the pipeline's default sampler: what a user
             runs without packing; far less padding than random order)
Prints per variant: optimizer steps, pad fraction, useful (non-padding) tokens/s, validation response loss per epoch,
test response loss, and writes benchmarks/results/chat_packing.json.
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
    epochs = [round(r["eval_response_loss"], 4) for r in hist if "eval_response_loss" in r][:-1]  # last: final eval
    steps = max(r.get("step", 0) for r in hist)
    return {"command": " ".join(cmd[2:]), "wall_seconds": round(time.time() - t, 1), "steps": steps,
            "train_rows": m["train_samples"], "pad_fraction": round(m["train_pad_fraction"], 4),
            "useful_tokens_per_second": round(m["train_useful_tokens_per_second"], 1),
            "processed_tokens_per_second": round(m["train_processed_tokens_per_second"], 1),
            "train_loop_seconds": round(m["train_loop_seconds"], 1),
            "eval_response_loss_per_epoch": epochs, "test_response_loss": round(m["test_response_loss"], 4),
            "test_perplexity": round(m["test_perplexity"], 2), "test_response_tokens": m["test_response_tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=2000, help="training rows (first N of train.jsonl)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/chat_packing")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "alpaca"))
    args = ap.parse_args()
    common = [f"data.dir={args.data_dir}", f"data.max_train_samples={args.train}", f"trainer.num_train_epochs={args.epochs}",
              f"task.block_size={args.block}", "trainer.learning_rate=1e-3", "trainer.warmup_steps=0.05",
              "trainer.per_device_eval_batch_size=16", "num_samples=4"]
    # ~16 examples per step on both sides: packed rows hold block / (mean example length ~106 tokens) examples
    rows = max(1, round(16 / (args.block / 106)))
    variants = {
        "packed": ["task.packing=true", f"trainer.per_device_train_batch_size={rows}",
                   f"trainer.global_batch_size={rows}", "trainer.train_sampling_strategy=random"],
        "unpacked": ["task.packing=false", "trainer.per_device_train_batch_size=16", "trainer.global_batch_size=16",
                     "trainer.train_sampling_strategy=group_by_length"],
    }
    out = Path(args.out)
    results = {name: run(name, common + v, out, args.threads) for name, v in variants.items()}
    p, u = results["packed"], results["unpacked"]
    results["ratio_useful_tokens_per_second"] = round(p["useful_tokens_per_second"] / u["useful_tokens_per_second"], 3)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "chat_packing.json").write_text(json.dumps(results, indent=1) + "\n")
    keys = ("steps", "train_rows", "pad_fraction", "useful_tokens_per_second", "train_loop_seconds",
            "eval_response_loss_per_epoch", "test_response_loss", "test_perplexity")
    print("| variant | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name in variants:
        print(f"| {name} | " + " | ".join(str(results[name][k]) for k in keys) + " |")
    print(f"packed / unpacked useful tokens/s: {results['ratio_useful_tokens_per_second']}")


if __name__ == "__main__":
    main()
