"""Ratios and the markdown tables of a harness result (benchmarks/run.py); writes <out>.json and <out>.md."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = [("samples/s", "samples_per_s", "{:.2f}"), ("tokens/s", "tokens_per_s", "{:.0f}"),
           ("useful tokens/s", "useful_tokens_per_s", "{:.0f}"), ("pad fraction", "pad_fraction", "{:.3f}"),
           ("train loop s", "train_loop_s", "{:.2f}"), ("of which batches s", "data_wait_s", "{:.2f}"),
           ("wall s", "wall_s", "{:.1f}"),
           ("start-up s", "startup_s", "{:.1f}"), ("peak RSS MB", "peak_rss_mb", "{:.0f}")]
TITLES = {"ner": "NER: MiniLM (pretrained, offline) on CoNLL-2003",
          "summarization": "Summarization: scratch T5 on DialogSum", "generation": "Causal LM: scratch GPT-2 on tiny Shakespeare"}
VARIANTS = {"pipeline": "pipeline (finetune)", "baseline": "plain Trainer, identical settings",
            "naive": "plain Trainer, naive padding to max length"}


def ratios(result: dict) -> dict:
    out = {}
    for task, t in result.get("throughput", {}).items():
        m = t["median"]
        r = {f"pipeline/baseline {k}": m["pipeline"][k] / m["baseline"][k]
             for k in ("samples_per_s", "tokens_per_s", "useful_tokens_per_s", "wall_s", "startup_s", "peak_rss_mb")}
        r["pipeline/naive useful_tokens_per_s"] = m["pipeline"]["useful_tokens_per_s"] / m["naive"]["useful_tokens_per_s"]
        r["pipeline pad_fraction"] = m["pipeline"]["pad_fraction"]
        r["naive pad_fraction"] = m["naive"]["pad_fraction"]
        out[task] = r
    if "memory" in result:
        m = result["memory"]["median"]
        out["memory"] = {"lora/full peak_rss_mb": m["lora"]["peak_rss_mb"] / m["full"]["peak_rss_mb"],
                         "lora/full train_rss_growth_mb": m["lora"]["train_rss_growth_mb"] / m["full"]["train_rss_growth_mb"]}
    return out


def _fmt(fmt: str, v) -> str:
    return "-" if v is None else fmt.format(v)


def markdown(result: dict, r: dict) -> str:
    lines = [f"# Benchmarks ({result['mode']})", "",
             f"`{result['command']}` — {result['machine']['cpus']} CPUs, torch threads per run: {result['threads']}, "
             f"load average at start {tuple(round(x, 1) for x in result['machine']['load_average_start'])}, at end "
             f"{tuple(round(x, 1) for x in result['machine']['load_average_end'])}; {result['seconds'] / 60:.1f} min. "
             "Medians over alternating repetitions; every run is a fresh process.", ""]
    if "startup" in result:
        lines += ["## Start-up", "", "| command | median s | runs |", "|---|---|---|"]
        lines += [f"| `{k}` | {v['median_s']:.2f} | {len(v['runs_s'])} |" for k, v in result["startup"].items()]
        lines.append("")
    for task, t in result.get("throughput", {}).items():
        s = t["settings"]
        lines += [f"## {TITLES[task]}", "", f"max_train_samples={s['max_train_samples']}, max_steps={s['max_steps']}, "
                  f"batch={s['batch']}, {len(t['runs']['pipeline'])} repetitions", "",
                  "| variant | " + " | ".join(c[0] for c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        for v, med in t["median"].items():
            lines.append(f"| {VARIANTS[v]} | " + " | ".join(_fmt(f, med.get(k)) for _, k, f in COLUMNS) + " |")
        lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in r[task].items()] + [""]
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
        lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in r["memory"].items()] + [""]
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
