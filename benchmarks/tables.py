"""Ratios and the markdown tables of a harness result (benchmarks/run.py); writes <out>.json and <out>.md.

A ratio is taken per repetition (the variant's run against the reference run of the same repetition) and reported
as the median with its interquartile range, rounded to the first significant digit of that range."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import TASKS  # noqa: E402

COLUMNS = [("samples/s", "samples_per_s", "{:.2f}"), ("tokens/s", "tokens_per_s", "{:.0f}"),
           ("useful tokens/s", "useful_tokens_per_s", "{:.0f}"), ("pad fraction", "pad_fraction", "{:.3f}"),
           ("MFU", "mfu", "{:.3f}"),
           ("train loop s", "train_loop_s", "{:.2f}"), ("of which batches s", "data_wait_s", "{:.2f}"),
           ("wall s", "wall_s", "{:.1f}"),
           ("start-up s", "startup_s", "{:.1f}"), ("peak RSS MB", "peak_rss_mb", "{:.0f}")]
VARIANTS = {"pipeline": "pipeline: the recipe as users run it", "baseline": "plain Trainer, the recipe's settings",
            "examples": "transformers example script defaults", "naive": "plain Trainer, padding to max length",
            "fp32": "pipeline, trainer.bf16=false", "bf16": "pipeline, trainer.bf16=true (autocast)",
            "1 thread": "pipeline, 1 torch thread", "2 threads": "pipeline, 2 torch threads"}
RATIOS = {  # section: [(label, variant, reference, figure)]
    "throughput": [("pipeline / plain Trainer with its settings, tokens/s (parity)", "pipeline", "baseline",
                    "tokens_per_s"),
                   ("pipeline / example script, useful tokens/s", "pipeline", "examples", "useful_tokens_per_s"),
                   ("pipeline / example script, samples/s", "pipeline", "examples", "samples_per_s"),
                   ("pipeline / naive padding, useful tokens/s", "pipeline", "naive", "useful_tokens_per_s")],
    "precision": [("bf16 / fp32, tokens/s", "bf16", "fp32", "tokens_per_s")],
    "threads": [("2 threads / 1 thread, tokens/s", "2 threads", "1 thread", "tokens_per_s")],
}


def spread(values: list[float]) -> dict:
    """Median and interquartile range of ``values``, and the text of both rounded to what the range allows."""
    values = sorted(values)
    med = statistics.median(values)
    q1, q3 = (statistics.quantiles(values, n=4, method="inclusive")[::2] if len(values) > 1 else (med, med))
    width = q3 - q1
    digits = 3 if width <= 0 else min(3, max(0, -math.floor(math.log10(width))))
    f = lambda v: f"{v:.{digits}f}"
    text = f"{f(med)} (IQR {f(q1)}–{f(q3)}, n={len(values)})" if len(values) > 1 else f"{f(med)} (n=1)"
    return {"median": med, "q1": q1, "q3": q3, "n": len(values), "text": text}


def ratios(result: dict) -> dict:
    out = {}
    for section, specs in RATIOS.items():
        for task, t in result.get(section, {}).items():
            if "runs" not in t:
                continue
            runs = t["runs"]
            for label, a, b, key in specs:
                if a in runs and b in runs:
                    per_rep = [x[key] / y[key] for x, y in zip(runs[a], runs[b]) if x.get(key) and y.get(key)]
                    if per_rep:
                        out.setdefault(section, {}).setdefault(task, {})[label] = spread(per_rep)
    if "memory" in result:
        runs = result["memory"]["runs"]
        out["memory"] = {"lora / full, peak RSS": spread([x["peak_rss_mb"] / y["peak_rss_mb"]
                                                          for x, y in zip(runs["lora"], runs["full"])])}
    return out


def _fmt(fmt: str, v) -> str:
    return "-" if v is None else fmt.format(v)


SECTION_TITLES = {"throughput": "Throughput: the pipeline against what users would run instead",
                  "precision": "bf16 autocast against fp32 (the pipeline's recipe)",
                  "threads": "One against two torch threads (the pipeline's recipe)"}


def markdown(result: dict, r: dict) -> str:
    lines = [f"# Benchmarks ({result['mode']})", "",
             f"`{result['command']}` — {result['machine']['cpus']} CPUs, torch threads per run: "
             f"{result.get('torch_threads', '?')} "
             f"(unless a variant says otherwise), load average at start "
             f"{tuple(round(x, 1) for x in result['machine']['load_average_start'])}, at end "
             f"{tuple(round(x, 1) for x in result['machine']['load_average_end'])}; {result['seconds'] / 60:.1f} min. "
             "Every run is a fresh process; variants alternate over the repetitions. Tables: medians. Ratios: per "
             "repetition, median (interquartile range, repetitions), rounded to what the range allows. MFU: model "
             "FLOP/s of the process over the measured matmul peak of its dtype and thread count (benchmarks/peak.py).",
             ""]
    if "startup" in result:
        lines += ["## Start-up", "", "| command | median s | runs |", "|---|---|---|"]
        lines += [f"| `{k}` | {v['median_s']:.2f} | {len(v['runs_s'])} |" for k, v in result["startup"].items()]
        lines.append("")
    for section, title in SECTION_TITLES.items():
        if section not in result:
            continue
        lines += [f"## {title}", ""]
        for task, t in result[section].items():
            lines += [f"### {TASKS[task].title}", ""]
            if "error" in t:
                lines += ["failed:", "", "```", t["error"], "```", ""]
                continue
            s = t["settings"]
            lines += [f"first {s['max_train_samples'] or 'all'} training rows, {s['max_steps']} optimizer steps at the "
                      f"recipe's batch (the example script's batch 8: twice the steps), {len(t['runs'][next(iter(t['runs']))])} "
                      "repetitions", "",
                      "| variant | " + " | ".join(c[0] for c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
            for v, med in t["median"].items():
                lines.append(f"| {VARIANTS.get(v, v)} | " + " | ".join(_fmt(f, med.get(k)) for _, k, f in COLUMNS) + " |")
            rows = r.get(section, {}).get(task, {})
            if rows:
                lines += ["", "| ratio | median (IQR, n) |", "|---|---|"] + [f"| {k} | {v['text']} |" for k, v in rows.items()]
            lines.append("")
    pending = [f"{t.title} ({t.pending})" for t in TASKS.values() if t.pending]
    if pending and any(s in result for s in SECTION_TITLES):
        lines += ["Not measured yet: " + "; ".join(pending) + ".", ""]
    if "cache" in result:
        lines += ["## Tokenisation cache (second run of the same recipe)", "",
                  "| run | tokenize s, 1st run | tokenize s, 2nd run | 2nd / 1st |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['first_s']:.2f} | {v['second_s']:.3f} | {v['ratio']:.3f} |" for k, v in result["cache"].items()]
        lines.append("")
    if "memory" in result:
        m, s = result["memory"], result["memory"]["settings"]
        lines += ["## Peak memory: LoRA vs full fine-tuning (CPU RSS)", "",
                  f"scratch GPT-2 {s['model']['hidden_size']}x{s['model']['num_layers']} layers, batch {s['batch']}, "
                  f"block {s['block_size']}, {s['max_steps']} steps", "",
                  "| method | peak RSS MB | RSS growth during training MB | samples/s |", "|---|---|---|---|"]
        for v, med in m["median"].items():
            lines.append(f"| {v} | {med['peak_rss_mb']:.0f} | {med['train_rss_growth_mb']:.0f} | {med['samples_per_s']:.2f} |")
        lines += ["", "| ratio | median (IQR, n) |", "|---|---|"] + [f"| {k} | {v['text']} |" for k, v in r["memory"].items()] + [""]
    for name, err in result.get("errors", {}).items():
        lines += [f"## {name}: failed", "", "```", err, "```", ""]
    return "\n".join(lines)


def write_report(result: dict, out: Path) -> None:
    result["ratios"] = ratios(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    text = markdown(result, result["ratios"])
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
