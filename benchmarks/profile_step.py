"""Where a training step's time goes on this machine: one HF Trainer run (the pipeline's recipe settings on real
data), timed per phase for every step after a warm-up, optionally profiled op by op with torch.profiler.

  flock /tmp/heavy.lock python benchmarks/profile_step.py --task ner --precision autocast --threads 1 --profile 5
  python benchmarks/profile_step.py --task ner --precision fp32 --compile --steps 40

Phases per optimizer step (callbacks + hooks around the Trainer's own loop, nothing re-implemented):
  batch      previous step's end -> the model's forward starts (data loading, collation, moving inputs)
  forward    the model's forward (under autocast for --precision autocast)
  backward   forward end -> gradient clipping starts
  clip       clip_grad_norm_ (max_grad_norm 1.0)
  optimizer  optimizer.step() (AdamW, fused: transformers' default)
  rest       scheduler step, zero_grad, callbacks
Model FLOPs per step come from pipeline/training/flops.py; MFU is against the measured matmul peak of the dtype
(pipeline/training/peaks.py, cached) unless --peak is given.

--precision: fp32 | autocast (trainer.bf16=true: bf16 matmuls, fp32 weights and optimizer) | bf16-weights (the model
cast to bf16, optimizer states in bf16: speed only, not a recipe: updates below bf16's resolution are lost).
Prints one JSON object (and writes it to --out).
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
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT.parent / "shared" / "data"

TASKS = {  # builder in baseline_data.py, data folder, recipe learning rate, default model
    "ner": dict(data="conll2003", lr=2e-4, model=None),
    "summarization": dict(data="dialogsum", lr=3e-4, model="t5"),
    "generation": dict(data="tinyshakespeare", lr=5e-4, model="gpt2"),
}
CATEGORIES = [  # (category, substrings of aten op names), first match wins; self CPU time of each op
    ("matmul", ("addmm", "aten::mm", "aten::bmm", "matmul", "linear", "mkldnn")),
    ("attention (sdpa, softmax)", ("attention", "softmax")),
    ("dropout masks (RNG)", ("bernoulli", "dropout")),
    ("casts (autocast copies)", ("_to_copy", "aten::copy_", "aten::to", "clone", "contiguous")),
    ("optimizer (AdamW)", ("adam", "_foreach_add", "_foreach_mul", "_foreach_div", "lerp", "addcdiv", "sqrt")),
    ("grad norm (clipping)", ("linalg_vector_norm", "_foreach_norm", "aten::norm")),
    ("zero fills", ("fill_", "zero_", "aten::zeros", "aten::empty")),
    ("embedding", ("embedding", "index_select", "index_add", "scatter", "gather")),
    ("layer norm + GELU", ("layer_norm", "gelu", "tanh")),
    ("loss", ("nll_loss", "cross_entropy", "log_softmax")),
    ("elementwise", ("aten::add", "aten::mul", "aten::div", "aten::sub", "aten::where", "aten::sum", "aten::mean",
                     "aten::clamp", "aten::rsub", "aten::pow", "aten::masked_fill")),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=list(TASKS), default="ner")
    p.add_argument("--precision", choices=["fp32", "autocast", "bf16-weights"], default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=40, help="optimizer steps in all (warm-up included)")
    p.add_argument("--warmup", type=int, default=8, help="first steps left out of the figures")
    p.add_argument("--samples", type=int, default=2000, help="first N training rows")
    p.add_argument("--compile", action="store_true", help="trainer.torch_compile=true (inductor)")
    p.add_argument("--profile", type=int, default=0, help="torch.profiler over this many steps after the warm-up")
    p.add_argument("--model_dir", default=None, help="default: MiniLM (ner) or benchmarks/run.py's scratch models")
    p.add_argument("--work", default="/tmp/finetune-bench")
    p.add_argument("--peak", type=float, default=None, help="peak FLOP/s for MFU (default: measured, cached)")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


class Phases:
    """Timestamps of every optimizer step's phases (see the module docstring)."""

    def __init__(self, trainer, plan):
        from transformers import TrainerCallback

        self.steps, self.cur, self.plan, self.last_end = [], {}, plan, None
        phases = self

        class Marks(TrainerCallback):
            def on_train_begin(self, *a, **k):
                phases.last_end = time.perf_counter()

            def on_pre_optimizer_step(self, *a, **k):
                phases.cur["pre_opt"] = time.perf_counter()

            def on_optimizer_step(self, *a, **k):
                phases.cur["post_opt"] = time.perf_counter()

            def on_step_end(self, *a, **k):
                now = time.perf_counter()
                phases.steps.append({**phases.cur, "start": phases.last_end, "end": now})
                phases.cur, phases.last_end = {}, now

        model = trainer.model
        model.register_forward_pre_hook(self._fwd_start, with_kwargs=True)
        model.register_forward_hook(self._fwd_end)
        trainer.add_callback(Marks())
        clip = trainer.accelerator.clip_grad_norm_

        def timed_clip(*a, **k):
            self.cur["clip_start"] = time.perf_counter()
            return clip(*a, **k)

        trainer.accelerator.clip_grad_norm_ = timed_clip

    def _fwd_start(self, module, args, kwargs):
        if module.training and "fwd_start" not in self.cur:
            self.cur["fwd_start"] = time.perf_counter()
            ids = kwargs["input_ids"]
            target = kwargs.get("decoder_input_ids", kwargs.get("labels"))
            self.cur["tokens"] = ids.numel() + (target.numel() if self.plan.encoder_decoder else 0)
            self.cur["flops"] = self.plan.batch_flops(tuple(ids.shape), tuple(target.shape) if target is not None else None)

    def _fwd_end(self, module, args, output):
        if module.training:
            self.cur.setdefault("fwd_end", time.perf_counter())

    def summary(self, skip: int) -> dict:
        rows = self.steps[skip:]
        if not rows:
            return {}
        ms = lambda a, b: statistics.median((r[b] - r[a]) * 1e3 for r in rows if a in r and b in r)
        total = sum(r["end"] - r["start"] for r in rows)
        out = {"steps_measured": len(rows), "seconds": total, "step_ms_median": ms("start", "end"),
               "tokens_per_s": sum(r["tokens"] for r in rows) / total,
               "model_flops_per_s": sum(r["flops"] for r in rows) / total}
        if all("fwd_end" in r and "clip_start" in r for r in rows):
            out["phases_ms_median"] = {"batch": ms("start", "fwd_start"), "forward": ms("fwd_start", "fwd_end"),
                                       "backward": ms("fwd_end", "clip_start"), "clip": ms("clip_start", "pre_opt"),
                                       "optimizer": ms("pre_opt", "post_opt"), "rest": ms("post_opt", "end")}
        return out


def categorize(prof) -> dict:
    """Self CPU milliseconds per category (CATEGORIES) over the profiled steps, plus the top ops."""
    totals, top = {}, []
    for ev in prof.key_averages():
        name, ms = ev.key, ev.self_cpu_time_total / 1e3
        if not name.startswith("aten::") and not name.startswith("mkldnn"):
            cat = "other (python, hooks, autograd engine)"
        else:
            cat = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other aten")
        totals[cat] = totals.get(cat, 0.0) + ms
        top.append((ms, name, cat))
    top.sort(reverse=True)
    return {"self_cpu_ms_by_category": dict(sorted(totals.items(), key=lambda kv: -kv[1])),
            "top_ops": [{"op": n, "self_cpu_ms": round(ms, 1), "category": c} for ms, n, c in top[:15]]}


def main(argv=None):
    args = parse_args(argv)
    import torch
    import transformers

    import baseline_trainer as bt
    from baseline_data import BUILDERS
    from pipeline.training import peaks
    from pipeline.training.flops import FlopPlan
    from pipeline.training.sampling import with_group_order

    torch.set_num_threads(args.threads)
    transformers.set_seed(0)
    spec = TASKS[args.task]
    model_dir = args.model_dir
    if model_dir is None:
        from run import prepare_models

        model_dir = prepare_models(Path(args.work), [spec["model"]] if spec["model"] else [])[spec["model"] or "minilm"]
    ns = bt.parse_args(["--task", args.task, "--model_dir", model_dir, "--data_dir", str(DATA / spec["data"]),
                        "--out", "/dev/null", "--max_train_samples", str(args.samples), "--source_prefix", "summarize: "])
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model, train, collator = BUILDERS[args.task](ns, tokenizer)
    if args.precision == "bf16-weights":
        model = model.to(torch.bfloat16)
    seq2seq = args.task == "summarization"
    args_class = transformers.Seq2SeqTrainingArguments if seq2seq else transformers.TrainingArguments
    trainer_class = with_group_order(transformers.Seq2SeqTrainer if seq2seq else transformers.Trainer, "shuffled")
    targs = args_class(
        output_dir=str(Path(args.work) / "profile-ckpt"), max_steps=args.steps, per_device_train_batch_size=args.batch,
        learning_rate=spec["lr"], weight_decay=0.01, warmup_steps=0.1, seed=0, logging_steps=10 ** 6, report_to="none",
        save_strategy="no", eval_strategy="no", disable_tqdm=True, use_cpu=True, dataloader_pin_memory=False,
        bf16=args.precision == "autocast", torch_compile=args.compile,
        train_sampling_strategy="random" if args.task == "generation" else "group_by_length")
    trainer = trainer_class(model=model, args=targs, train_dataset=train, data_collator=collator,
                            processing_class=tokenizer)
    phases = Phases(trainer, FlopPlan(model))
    prof = None
    if args.profile:
        from torch.profiler import ProfilerActivity, profile, schedule

        prof = profile(activities=[ProfilerActivity.CPU],
                       schedule=schedule(wait=args.warmup, warmup=1, active=args.profile, repeat=1))

        class Step(transformers.TrainerCallback):
            def on_step_end(self, *a, **k):
                prof.step()

        trainer.add_callback(Step())
        prof.start()
    trainer.train()
    if prof is not None:
        prof.stop()
    dtype = "bf16" if args.precision != "fp32" else "fp32"
    peak, source = peaks.peak_flops(dtype, override=args.peak)
    out = {"task": args.task, "precision": args.precision, "threads": args.threads, "batch": args.batch,
           "compile": args.compile, "samples": args.samples, "peak_flops": peak, "peak_source": source,
           **phases.summary(args.warmup + (1 + args.profile if args.profile else 0))}
    if peak and "model_flops_per_s" in out:
        out["mfu"] = out["model_flops_per_s"] / peak
    if prof is not None:
        out.update(categorize(prof))
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
