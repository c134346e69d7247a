"""Time to quality: each side trains to the end of its own budget, saving model-only checkpoints; one evaluator
scores every checkpoint of both sides on the same validation rows; the training seconds of each checkpoint come from
the meter (pipeline/training/throughput.py: loop time with checkpoint saves left out). Reported per task: the example
script's final validation metric, the time it trained for, and the time the other side first reached that metric.

  flock /tmp/heavy.lock python benchmarks/quality.py                    # pipeline recipe vs example script
  flock /tmp/heavy.lock python benchmarks/quality.py --compare precision --tasks summarization generation

--compare examples   the pipeline's recipe as users run it (its defaults: group_order=shuffled, bf16 as resolved)
                     against the transformers example script's defaults (benchmarks/tasks.py)
--compare precision  the pipeline's recipe with trainer.bf16=false against true: the metric at equal steps

Metrics: NER entity F1 (seqeval, first sub-word of each word, as run_ner and the pipeline); seq2seq and causal LM:
token-weighted validation loss (the example scripts' eval metric), with the pipeline's validation preprocessing
(summarization: source 512 / target 128 tokens; causal LM: the pipeline's validation split in blocks of 256).
One process at a time, --threads torch threads each. Writes benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import run as harness  # noqa: E402
from evaluators import scorer  # noqa: E402
from tasks import MEASURED, TASKS  # noqa: E402

PLAN = {  # per task: training rows (None: all), checkpoint every N steps for the pipeline / the example script
    "ner": dict(rows=2000, every=(100, 150), val_rows=1000),
    "summarization": dict(rows=2000, every=(16, 96)),
    "generation": dict(rows=None, every=(16, 24)),
    "classification": dict(rows=2000, every=(16, 75)),
    "qa": dict(rows=600, every=(16, 48), val_rows=300),
    "translation": dict(rows=4000, every=(25, 150)),
}


SMOKE = dict(rows=64, every=(2, 6), val_rows=64)  # --smoke: checks the harness, measures nothing


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def splits_for(task: str, work: Path, dirs: dict, rows=None, val_rows=None) -> dict:
    """The pipeline's own train / validation rows for ``task`` (its loader, its seed, its first-N cap): JSONL files
    both sides can use."""
    from hydra import compose, initialize_config_dir

    from pipeline.data import load_raw
    from pipeline.tasks import get_task

    t = TASKS[task]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=t.fill(t.recipe, harness.DATA, dirs) + ["seed=0"])
    raw, _, _ = load_raw(cfg.data, get_task(cfg), 0)
    for split, n in (("train", rows), ("validation", val_rows)):
        if n:
            raw[split] = raw[split].select(range(min(n, len(raw[split]))))
    out = {}
    for split in ("train", "validation", "test"):
        path = work / "splits" / task / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        raw[split].to_json(str(path), lines=True, force_ascii=False)
        out[split] = path
    return out


def curve(run_dir: Path, checkpoints: Path, final: Path, metrics: dict, score, tokenizer, rows) -> list[dict]:
    """[(step, train_seconds, metric)] over the checkpoints and the final model of one run."""
    points = []
    for ckpt in sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        state = json.loads((ckpt / "trainer_state.json").read_text())
        row = next((r for r in reversed(state["log_history"])
                    if r.get("step") == state["global_step"] and "train_seconds" in r), None)
        if row is None:  # a save without a log row (the Trainer's save at the last step): the final model has it
            continue
        points.append({"step": state["global_step"], "train_seconds": row["train_seconds"],
                       "metric": score(ckpt, tokenizer, rows)})
    history = run_dir / "log_history.json"  # the pipeline's; the plain script writes global_step
    steps = metrics.get("global_step") or max(r.get("step", 0) for r in json.loads(history.read_text()))
    if not points or points[-1]["step"] < steps:
        points.append({"step": steps, "train_seconds": metrics["train_loop_seconds"], "metric": score(final, tokenizer, rows)})
    return points


def at_time(points: list[dict], t: float) -> float | None:
    """The metric at ``t`` training seconds, linear between checkpoints (None before the first one)."""
    for a, b in zip(points, points[1:]):
        if a["train_seconds"] <= t <= b["train_seconds"]:
            w = (t - a["train_seconds"]) / max(b["train_seconds"] - a["train_seconds"], 1e-9)
            return a["metric"] + w * (b["metric"] - a["metric"])
    return points[-1]["metric"] if points and abs(points[-1]["train_seconds"] - t) < 1e-6 else None


def first_reaching(points: list[dict], target: float, higher: bool) -> dict | None:
    return next((p for p in points if (p["metric"] >= target if higher else p["metric"] <= target)), None)


def run_side(label: str, cmd: list[str], work: Path, environ: dict, done: Path, reuse: bool) -> float | None:
    """Train one side; its wall seconds (also saved beside ``done``, its metrics.json). ``reuse``: a side whose
    metrics.json exists is not trained again (an interrupted invocation resumes)."""
    wall_file = done.parent / "wall_seconds.txt"
    if reuse and done.is_file():
        print(f"  {label}: reused {done}", flush=True)
        return float(wall_file.read_text()) if wall_file.is_file() else None
    print(f"  {label}: {' '.join(cmd[:6])} ...", flush=True)
    wall = harness.timed(cmd, environ, work / f"{label}.log")
    done.parent.mkdir(parents=True, exist_ok=True)
    wall_file.write_text(f"{wall}\n")
    return wall


def bench_task(task: str, compare: str, work: Path, environ: dict, dirs: dict, smoke: bool = False,
               reuse: bool = False, clm_eval: str = "documents") -> dict:
    import transformers

    t, plan = TASKS[task], (SMOKE if smoke else PLAN[task])
    work = work / "quality" / compare / task
    work.mkdir(parents=True, exist_ok=True)
    splits = splits_for(task, work, dirs, plan["rows"], plan.get("val_rows"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(dirs[t.model])
    val = _rows(splits["validation"])
    every_pipe, every_ex = plan["every"]
    rows = [f"data.max_train_samples={plan['rows']}"] if plan["rows"] else []
    save = lambda n: ["trainer.save_strategy=steps", f"+trainer.save_steps={n}", "trainer.save_total_limit=null",
                      "+trainer.save_only_model=true", f"trainer.logging_steps={n}"]
    pipe = lambda d, extra=(): [sys.executable, "-m", "pipeline", *t.fill(t.recipe, harness.DATA, dirs), *rows,
                                "do_eval=false", "num_samples=0", "seed=0", "trainer.load_best_model_at_end=false",
                                "trainer.report_to=none", "trainer.disable_tqdm=true", *save(every_pipe), *extra,
                                f"hydra.run.dir={d}"]
    sides = {}
    if compare == "examples":
        d = work / "pipeline"
        wall = run_side("pipeline", pipe(d), work, environ, d / "metrics.json", reuse)
        sides["pipeline"] = (d, d / "checkpoints", d / "model", json.loads((d / "metrics.json").read_text()), wall)
        d = work / "examples"
        flags = list(t.examples) + ["--max_steps", "-1", "--save_steps", str(every_ex), "--logging_steps", str(every_ex),
                                    "--out", str(d / "metrics.json")]
        if task == "generation":
            flags += ["--train_file", str(splits["train"])]
        elif plan["rows"]:
            flags += ["--max_train_samples", str(plan["rows"])]
        cmd = [sys.executable, str(ROOT / "benchmarks" / "baseline_trainer.py"), *t.fill(t.data_args, harness.DATA, dirs), *flags]
        d.mkdir(parents=True, exist_ok=True)
        wall = run_side("examples", cmd, work, environ, d / "metrics.json", reuse)
        sides["examples"] = (d, d / "metrics" / "checkpoints", d / "metrics" / "model",
                             json.loads((d / "metrics.json").read_text()), wall)
        reference, other = "examples", "pipeline"
    else:
        for p in ("fp32", "bf16"):
            d = work / p
            wall = run_side(p, pipe(d, [f"trainer.bf16={'true' if p == 'bf16' else 'false'}"]), work, environ,
                            d / "metrics.json", reuse)
            sides[p] = (d, d / "checkpoints", d / "model", json.loads((d / "metrics.json").read_text()), wall)
        reference, other = "fp32", "bf16"
    curves = {k: curve(*v[:4], scorer(task, clm_eval), tokenizer, val) for k, v in sides.items()}
    higher = t.metric != "loss"
    target = curves[reference][-1]["metric"]
    label = {"f1": "validation F1", "accuracy": "validation accuracy"}.get(t.metric, "validation loss")
    out = {"metric": label + (f" ({clm_eval})" if task == "generation" else ""), "higher_is_better": higher, "target": target,
           "curves": curves, "wall_seconds": {k: v[4] for k, v in sides.items()},
           "train_seconds": {k: v[3]["train_loop_seconds"] for k, v in sides.items()},
           "steps": {k: c[-1]["step"] for k, c in curves.items()},
           "tokens_per_second": {k: v[3]["train_processed_tokens_per_second"] for k, v in sides.items()},
           "mfu": {k: v[3].get("mfu") for k, v in sides.items()},
           "compute_dtype": {k: v[3].get("compute_dtype") for k, v in sides.items()},
           "reference": reference, "other": other}
    hit_ref, hit_other = first_reaching(curves[reference], target, higher), first_reaching(curves[other], target, higher)
    out["reference_first_reached_s"] = hit_ref["train_seconds"]
    out["other_reached_s"] = hit_other["train_seconds"] if hit_other else None
    if hit_other:
        out["speedup_to_reference_final"] = out["train_seconds"][reference] / hit_other["train_seconds"]
    out["final_metric"] = {k: c[-1]["metric"] for k, c in curves.items()}
    shorter = min(c[-1]["train_seconds"] for c in curves.values())  # both sides at the shorter run's end
    out["equal_time"] = {"train_seconds": shorter, **{k: at_time(c, shorter) for k, c in curves.items()}}
    for k, c in curves.items():
        print(f"  {k}: " + ", ".join(f"{p['train_seconds']:.0f}s {p['metric']:.4f}" for p in c), flush=True)
    return out


def markdown(result: dict) -> str:
    runs = result.get("runs") or [result]  # a --merge of several invocations lists each
    lines = [f"# Time to quality ({result['compare']})", ""]
    for r in runs:
        lines += [f"`{r['command']}`: {r['cpus']} CPUs, {r['threads']} torch thread(s) per run, one run at a time in "
                  f"this invocation; load average at start {tuple(round(x, 1) for x in r['load_average_start'])}, at "
                  f"end {tuple(round(x, 1) for x in r['load_average_end'])}; {r['seconds'] / 60:.0f} min"
                  f" ({', '.join(r['tasks'])}).", ""]
    lines += ["Seconds are training-loop seconds (checkpoint saves left out); one run per side (no spread: a single "
              "measurement each). Checkpoints are scored by one evaluator (benchmarks/evaluators.py), so a time to "
              "reach a metric is the first checkpoint at or past it (an upper bound at the checkpoint spacing).", ""]
    for task, r in result["tasks"].items():
        lines += [f"## {TASKS[task].title}", ""]
        if "error" in r:
            lines += ["failed:", "", "```", r["error"], "```", ""]
            continue
        ref, oth = r["reference"], r["other"]
        fmt = (lambda v: f"{v:.4f}") if r["higher_is_better"] else (lambda v: f"{v:.3f}")
        lines += ["| side | steps | train s | tokens/s | MFU | dtype | final " + r["metric"] + " | wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for k in (oth, ref):
            mfu = r["mfu"].get(k)
            lines.append(f"| {k} | {r['steps'][k]} | {r['train_seconds'][k]:.0f} | {r['tokens_per_second'][k]:.0f} | "
                         f"{'-' if mfu is None else f'{mfu:.3f}'} | {r['compute_dtype'][k]} | {fmt(r['final_metric'][k])} | "
                         f"{'-' if r['wall_seconds'][k] is None else round(r['wall_seconds'][k])} |")
        reached = (f"{oth} reached it after {r['other_reached_s']:.0f} s: "
                   f"**{r['speedup_to_reference_final']:.1f}x** less training time than {ref}'s full run, "
                   f"{r['reference_first_reached_s'] / r['other_reached_s']:.1f}x less than {ref}'s first checkpoint "
                   "at that level" if r["other_reached_s"] is not None else f"{oth} never reached it (best "
                   f"{fmt(max(p['metric'] for p in r['curves'][oth]) if r['higher_is_better'] else min(p['metric'] for p in r['curves'][oth]))})")
        eq = r.get("equal_time") or {}
        level = (f" At equal training time ({eq['train_seconds']:.0f} s, the shorter run's end; linear between "
                 "checkpoints): " + ", ".join(f"{k} {'-' if eq.get(k) is None else fmt(eq[k])}" for k in (oth, ref)) + "."
                 if eq else "")
        if r["steps"][ref] == r["steps"][oth]:  # same schedule (--compare precision): the delta at equal steps
            d = r["final_metric"][oth] - r["final_metric"][ref]
            level += (f" At equal steps ({r['steps'][ref]}): {oth} − {ref} = {d:+.4f}; training time {ref} / {oth} = "
                      f"{r['train_seconds'][ref] / r['train_seconds'][oth]:.2f}x (one run each).")
        lines += ["", f"Target: {ref}'s final {r['metric']} {fmt(r['target'])} after {r['train_seconds'][ref]:.0f} s "
                  f"(its own first checkpoint at that level: {r['reference_first_reached_s']:.0f} s); {reached}.{level}", "",
                  "Curves (train s: metric): " + "; ".join(
                      f"{k}: " + ", ".join(f"{p['train_seconds']:.0f}: {fmt(p['metric'])}" for p in c)
                      for k, c in r["curves"].items()), ""]
    pending = [f"{t.title} ({t.pending})" for t in TASKS.values() if t.pending]
    if pending:
        lines += ["Not measured yet: " + "; ".join(pending) + ".", ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", choices=["examples", "precision"], default="examples")
    p.add_argument("--tasks", nargs="+", default=MEASURED, choices=MEASURED)
    p.add_argument("--threads", type=harness.positive_int, default=1)
    p.add_argument("--smoke", action="store_true", help="64 rows, checkpoints every few steps: checks the harness")
    p.add_argument("--score", nargs="*", default=None, metavar="MODEL_DIR",
                   help="only score these model directories on --split of the first --tasks task, print JSON")
    p.add_argument("--split", default="test", choices=["validation", "test"])
    p.add_argument("--data", default=str(harness.DATA))
    p.add_argument("--work", default="/tmp/finetune-bench")
    p.add_argument("--name", default=None, help="result file name (default: quality-<compare>, -smoke with --smoke)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--clm-eval", default="documents", choices=["documents", "blocks"],
                   help="causal LM validation loss: each document alone, or joined blocks of 256 (run_clm's)")
    p.add_argument("--reuse", action="store_true", help="a side already trained in --work (its metrics.json) is only "
                   "scored again")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="only merge finished result files (one --compare) into --name's .json / .md")
    args = p.parse_args(argv)
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        merged = {"compare": parts[0]["compare"], "tasks": {}, "runs": []}
        for part in parts:
            merged["tasks"].update(part["tasks"])
            merged["runs"].append({k: part[k] for k in ("command", "cpus", "threads", "load_average_start",
                                                        "load_average_end", "seconds")} | {"tasks": list(part["tasks"])})
        name = Path(args.out) / (args.name or f"quality-{merged['compare']}")
        name.with_suffix(".json").write_text(json.dumps(merged, indent=1) + "\n")
        name.with_suffix(".md").write_text(markdown(merged) + "\n")
        print(markdown(merged))
        return
    harness.DATA = Path(args.data).resolve()
    if not harness.DATA.is_dir():
        p.error(f"--data {args.data}: no such folder (it holds conll2003/ sst2/ squad/ dialogsum/ multi30k/ "
                "tinyshakespeare/, see ../shared/data/README.md)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    environ = harness.env(work, args.threads)
    os.environ.update({k: environ[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_DATASETS_CACHE")})
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    result = {"compare": args.compare, "command": "python benchmarks/quality.py " + " ".join(sys.argv[1:]),
              "clm_eval": args.clm_eval,
              "cpus": os.cpu_count(), "threads": args.threads, "load_average_start": os.getloadavg(), "tasks": {}}
    from peak import seed_cache

    result["peaks"] = seed_cache([args.threads]) if args.score is None else {}  # the MFU denominator of every run (pipeline/training/peaks.py cache)
    dirs = harness.prepare_models(work, [TASKS[t].model for t in args.tasks if TASKS[t].model in harness.SCRATCH])
    if args.score is not None:
        import transformers

        task = args.tasks[0]
        rows = _rows(splits_for(task, work / "score", dirs)[args.split])
        tokenizer = transformers.AutoTokenizer.from_pretrained(dirs[TASKS[task].model])
        print(json.dumps({d: scorer(task, args.clm_eval)(Path(d), tokenizer, rows) for d in args.score}, indent=1))
        return
    name = Path(args.out) / (args.name or f"quality-{args.compare}" + ("-smoke" if args.smoke else ""))
    for task in args.tasks:
        print(f"quality {task}", flush=True)
        try:
            result["tasks"][task] = bench_task(task, args.compare, work, environ, dirs, args.smoke, args.reuse,
                                                args.clm_eval)
        except (Exception, SystemExit) as e:
            print(f"{task} failed: {e}", flush=True)
            result["tasks"][task] = {"error": str(e)[-2000:]}
        result["load_average_end"], result["seconds"] = os.getloadavg(), time.time() - t0
        name.parent.mkdir(parents=True, exist_ok=True)
        name.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")  # after every task: partial results
        name.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
