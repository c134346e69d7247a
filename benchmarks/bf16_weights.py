"""bf16 past autocast on CPU: bf16 weights stepped by torchao's AdamW with bf16 stochastic rounding, against bf16
autocast (fp32 weights) and fp32, at equal steps: quality (validation F1 / loss) and tokens/s, repeated for spread.

    flock /tmp/heavy.lock python benchmarks/bf16_weights.py --reps 2          # results/bf16-weights.{json,md}

Variants: ``fp32`` (trainer.bf16=false), ``autocast`` (trainer.bf16=true: fp32 weights, bf16 matmuls), ``bf16-sr``
(model cast to bf16, no autocast; torchao.optim._AdamW(bf16_stochastic_round=True): bf16 weights and bf16 Adam
states, the fp32 update rounded stochastically into bf16 so updates below bf16's resolution survive on average).
torchao compiles its per-parameter step with torch.compile (one compile per parameter shape, tens of seconds):
one warm-up step on throw-away copies of the parameters compiles them before the training clock starts.
This CPU (AMD EPYC, AVX2, no AMX) has no bf16 matrix units: a bf16 matmul runs far below fp32 here, so the runs
are short and the tokens/s say what bf16 costs on such a CPU, not what it gains on one with AMX or a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {
    "minilm-ner": ["recipe=minilm-ner", "data.max_train_samples=640", "data.max_eval_samples=300",
                   "data.max_test_samples=16", "trainer.max_steps=40"],
    "gpt2-scratch": ["recipe=gpt2-generation", "debug=smoke", "model.scratch.hidden_size=128",
                     "model.scratch.num_layers=2", "model.scratch.num_heads=4", "model.scratch.intermediate_size=512",
                     "data.synthetic.num_train=1024", "trainer.max_steps=60"],
}
COMMON = ["trainer.eval_strategy=no", "trainer.save_strategy=no", "trainer.load_best_model_at_end=false",
          "trainer.logging_steps=10", "num_samples=0"]
VARIANTS = {"fp32": ["trainer.bf16=false"], "autocast": ["trainer.bf16=true"], "bf16-sr": ["trainer.bf16=false"]}
QUALITY = {"minilm-ner": ("eval_f1", True), "gpt2-scratch": ("eval_loss", False)}


def one(model: str, variant: str, run_dir: Path) -> dict:
    import torch
    from hydra import compose, initialize_config_dir
    from torchao.optim import _AdamW

    from pipeline.commands.app import user_overrides
    from pipeline.stages import run as stages
    from pipeline.training import peaks

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=user_overrides(MODELS[model] + COMMON + VARIANTS[variant]))
    stages.reset_peak_memory()
    r = stages.until(stages.Run(cfg=cfg, run_dir=run_dir), stages.train_stage)
    r.trainer = stages.make_trainer(r)  # train_stage keeps a trainer that is already built
    if variant == "bf16-sr":
        r.trainer.model.to(torch.bfloat16)
        args = r.trainer.args
        params = [p for p in r.trainer.model.parameters() if p.requires_grad]
        r.trainer.optimizer = _AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay,
                                     betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                                     bf16_stochastic_round=True)
        warm = [torch.nn.Parameter(p.detach().clone()) for p in params]  # compile each shape off the clock
        for w in warm:
            w.grad = torch.zeros_like(w)
        _AdamW(warm, lr=args.learning_rate, bf16_stochastic_round=True).step()
    t = time.time()
    stages.train_stage(r)
    stages.evaluate_stage(r)
    m = r.metrics
    key, _ = QUALITY[model]
    bf16_peak, _ = peaks.peak_flops("bf16", args=r.trainer.args)  # bf16-sr's MFU in metrics uses the fp32 peak
    flops = m.get("train_model_flops_per_second")
    return {"model": model, "variant": variant, "quality_key": key, "quality": m.get(key),
            "tokens_per_s": m.get("train_processed_tokens_per_second"), "mfu": m.get("mfu"),
            "bf16_peak_share": flops / bf16_peak if flops and bf16_peak else None,
            "train_loss": m.get("train_loss"), "train_loop_seconds": m.get("train_loop_seconds"),
            "wall_s": time.time() - t}


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | variant | runs | quality (mean ± sd) | tokens/s (mean ± sd) | share of bf16 peak | train loss |",
             "|---|---|---|---|---|---|---|"]
    for model in MODELS:
        for variant in VARIANTS:
            rs = [r for r in rows if r["model"] == model and r["variant"] == variant and r["quality"] is not None]
            if not rs:
                continue

            def ms(k, spec):
                v = [r[k] for r in rs if r[k] is not None]
                if not v:
                    return "-"
                sd = statistics.stdev(v) if len(v) > 1 else 0.0
                return f"{format(statistics.mean(v), spec)} ± {format(sd, spec)}"

            lines.append(f"| {model} | {variant} | {len(rs)} | {rs[0]['quality_key']} {ms('quality', '.4f')} | "
                         f"{ms('tokens_per_s', '.0f')} | {ms('bf16_peak_share', '.3f')} | {ms('train_loss', '.4f')} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bf16-weights")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bf16-weights"))
    args = ap.parse_args(argv)
    rows = []
    json_file = args.out.with_suffix(".json")
    if json_file.is_file():
        rows = json.loads(json_file.read_text())
    for rep in range(args.reps):
        for model in args.models:
            for variant in args.variants:  # alternated: load drifts hit every variant alike
                row = one(model, variant, args.work / f"{model}-{variant}-{rep}-{time.time():.0f}")
                rows.append(row)
                print(json.dumps(row), flush=True)
                json_file.write_text(json.dumps(rows, indent=1))
    args.out.with_suffix(".md").write_text("\n".join(["# bf16 weights + stochastic rounding vs autocast vs fp32",
                                                      "", *table(rows), ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
