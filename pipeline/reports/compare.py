"""The comparison of runs (``finetune-compare``, pipeline/commands/compare.py, and the end of every sweep).

Scans the directories recursively for run directories (a ``metrics.json`` or ``status.json``: reports/runs.py) and
writes comparison.md / .csv / .json / .png / .html (plots: reports/plots.py; the page: reports/pages.py): per family, a table sorted by the headline
metric (failed runs last, with their error), the metric against trainable parameters (log x), train time and peak
memory with the Pareto front marked, the train / eval loss curves, and an Optuna study when the folder holds one.
It also runs at the end of every ``--multirun`` sweep (``CompareOnMultirunEnd``, conf/hydra/default.yaml).
Each run's headline and direction come from its own .hydra/config.yaml (``headline``): no task is named here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from pipeline.errors import ConfigError
from pipeline.infra.distributed import rank
from pipeline.reports import pages
from pipeline.reports.plots import plot
from pipeline.reports.runs import find_runs, loss_history, read_run
from pipeline.util.paths import write_atomic

log = logging.getLogger(__name__)

COLUMNS = ("run", "family", "task", "method", "status", "metric", "value", "trainable_params", "total_params",
           "trainable_pct", "train_seconds", "samples_per_second", "tokens_per_second", "peak_mem_mb",
           "model_mb", "eval_loss", "learning_rate", "greater_is_better", "label", "error")


def _short_run(run: str) -> str:
    """A sweep job's folder without its override list: ``sweep/3-lr=...,seed=1`` -> ``sweep/3``."""
    parent, _, name = run.rpartition("/")
    head = name.split("-", 1)[0]
    return f"{parent}/{head}" if parent else head


def _labels(group: list[dict]) -> None:
    """Plot / table label: the method, with the learning rate (or the run) where a method appears twice."""
    for r in group:
        twins = [o for o in group if o["method"] == r["method"]]
        lrs = {o["learning_rate"] for o in twins}
        shorts = {_short_run(o["run"]) for o in twins}
        r["label"] = r["method"] if len(twins) == 1 else (
            f"{r['method']} lr={r['learning_rate']:g}" if len(lrs) == len(twins) and None not in lrs
            else f"{r['method']} ({_short_run(r['run']) if len(shorts) == len(twins) else r['run']})")


def sections(rows: list[dict]) -> dict:
    """{(family, task): rows sorted best first by the task metric; runs without a value last}."""
    out = {}
    for r in rows:
        out.setdefault((r["family"], r["task"]), []).append(r)
    for key, group in out.items():
        _labels(group)
        better = group[0]["greater_is_better"]
        group.sort(key=lambda r: (r["value"] is None, -(r["value"] or 0) if better else (r["value"] or 0), r["run"]))
    return dict(sorted(out.items()))


def _fmt(v, key=""):
    if v is None or v == "":
        return "" if key == "error" else "–"
    if isinstance(v, float) and key == "learning_rate":
        return f"{v:.2g}"
    if isinstance(v, float):
        return f"{v:.2f}" if key in ("trainable_pct", "train_seconds", "peak_mem_mb", "model_mb") or abs(v) >= 100 \
            else f"{v:.4f}"
    if isinstance(v, int) and key.endswith("params"):
        return f"{v:,}"
    return str(v).replace("|", "\\|").replace("\n", " ")


MD_COLUMNS = ("label", "value", "trainable_params", "trainable_pct", "train_seconds", "samples_per_second",
              "tokens_per_second", "peak_mem_mb", "model_mb", "eval_loss", "learning_rate", "status", "run", "error")
MD_HEAD = ("method", "{metric}", "trainable", "trainable %", "train s", "samples/s", "tokens/s", "peak MB",
           "saved MB", "eval loss", "LR", "status", "run", "error")


def markdown(secs: dict) -> str:
    parts = ["# Fine-tuning comparison", ""]
    for (family, task), group in secs.items():
        metric = group[0]["metric"]
        parts += [f"## {family} · {task} · {metric}", "",
                  "| " + " | ".join(h.format(metric=metric) for h in MD_HEAD) + " |",
                  "|" + "---|" * len(MD_HEAD)]
        parts += ["| " + " | ".join(_fmt(r[c], c) for c in MD_COLUMNS) + " |" for r in group]
        parts.append("")
    parts.append("![comparison](comparison.png)")
    return "\n".join(parts) + "\n"


def compare(dirs, out=None) -> dict:
    """Write comparison.{md,csv,json,png,html} to ``out`` (default: the first directory); returns the sections.
    Folders holding no run are refused (ConfigError) before anything is written; each file is written whole or not
    at all (atomic), so an interrupted report never leaves a half file."""
    dirs = [Path(d) for d in dirs]
    out = Path(out) if out else dirs[0]
    runs = [r.resolve() for r in find_runs(dirs)]
    if not runs:
        raise ConfigError(f"{', '.join(map(str, dirs))}: no run directory in it (a run directory holds metrics.json "
                          f"or status.json); give finetune's output folders, e.g. outputs/<name> or a multirun "
                          f"folder")
    root = Path(os.path.commonpath(runs)) if len(runs) > 1 else runs[0].parent
    rows = [read_run(r, root) for r in runs]
    secs = sections(rows)
    histories = {r["run"]: loss_history(p) for r, p in zip(rows, runs)}
    study = next((s for s in map(pages.optuna_results, dirs) if s), None)  # optuna.json of a search
    links = {r["run"]: os.path.relpath(p / "report.html", out) for r, p in zip(rows, runs)
             if (p / "report.html").is_file()}
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(r for g in secs.values() for r in g)
    page = pages.comparison_page(secs, histories, study, links)  # everything computed before the first write
    out.mkdir(parents=True, exist_ok=True)
    plot(secs, histories, out / "comparison.png")
    write_atomic(out / "comparison.md", markdown(secs))
    write_atomic(out / "comparison.csv", table.getvalue())
    write_atomic(out / "comparison.json", json.dumps(
        {"sections": [{"family": fam, "task": task, "runs": g} for (fam, task), g in secs.items()]}, indent=2))
    write_atomic(out / "comparison.html", page)
    return secs


class CompareOnMultirunEnd(Callback):
    """After a ``--multirun`` sweep: the comparison report in the sweep directory."""

    def on_multirun_end(self, config, **kwargs) -> None:
        if rank() != 0:  # under accelerate launch every rank ends the sweep; rank 0 reports
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            secs = compare([sweep_dir])
        except Exception as e:  # a report problem must not turn a finished sweep into a failure
            log.warning("comparison of %s failed: %s: %s", sweep_dir, type(e).__name__, e)
            return
        failed = [r for g in secs.values() for r in g if r["status"] in ("failed", "died")]
        print(f"comparison: {sweep_dir / 'comparison.md'} ({sum(map(len, secs.values()))} runs, "
              f"{len(failed)} failed)", file=sys.stderr if failed else sys.stdout)
