"""HTML reports, each one self-contained file (styles, a few lines of script, plots as inline PNG; nothing fetched):

- ``comparison.html`` (finetune-compare, the end of a sweep): per family a sortable table of the runs (failed ones
  with their errors), the comparison plots, and an Optuna study's history and parameter importances when the folder
  holds one (optuna.json, written by hydra/sweeper=optuna);
- ``report.html`` in every run directory (the report stage, pipeline/stages/run.py): headline and all metrics, loss curves, samples, the
  composed config and the command that ran.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import shlex
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from pipeline.reports.plots import figure
from pipeline.reports.runs import headline, loss_history
from pipeline.util.paths import write_atomic

log = logging.getLogger(__name__)

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1300px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}th,td{border:1px solid #ddd;padding:.3em .55em;
text-align:left;vertical-align:top;max-width:30em}th{background:#f4f4f4;white-space:nowrap}
td.wrap,code{overflow-wrap:anywhere}table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \\2195";color:#aaa}tr.failed td{background:#fff1f0}tr.best td{background:#effaf0}
td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}.error{color:#a8071a;white-space:pre-wrap}
.muted{color:#777}
"""
# Click a column header: sort the table's rows by it (numbers as numbers, empty cells last); click again: reverse.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute("data-order") !== "asc";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-order"); });
      th.setAttribute("data-order", asc ? "asc" : "desc");
      function key(row) {
        var cell = row.cells[col], v = cell ? (cell.getAttribute("data-value") || cell.textContent.trim()) : "";
        var n = parseFloat(v.replace(/,/g, ""));
        return v === "" || v === "\\u2013" ? null : (isNaN(n) ? v.toLowerCase() : n);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value) -> str:
    if value is None or value == "":
        return "\u2013"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{STYLE}</style></head>"
            f"<body><h1>{esc(title)}</h1>\n{body}\n<script>{SCRIPT}</script></body></html>\n")


def table(head: list[str], rows: list[list], sortable: bool = True, row_class: list[str] | None = None,
          kind: str = "") -> str:
    """``rows``: lists of cell values (a value, or (html, sort value) for a cell that is already HTML)."""
    out = [f"<table class=\"{'sortable' if sortable else 'plain'} {kind}\"><thead><tr>"
           + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f" class=\"{row_class[i]}\"" if row_class and row_class[i] else ""
        cells = []
        for v in row:
            if isinstance(v, tuple):
                cells.append(f"<td class=\"wrap\" data-value=\"{esc(v[1])}\">{v[0]}</td>")
            else:
                num = isinstance(v, (int, float)) and not isinstance(v, bool)
                text = esc(fmt(v))
                cells.append(f"<td class=\"num\" data-value=\"{v!r}\">{text}</td>" if num else
                             f"<td class=\"wrap\">{text}</td>" if len(text) > 30 else f"<td>{text}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table>"


def png(fig, alt: str) -> str:
    """A matplotlib figure as an inline <img> (closed afterwards)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    _plt().close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f"<img alt=\"{esc(alt)}\" src=\"data:image/png;base64,{data}\">"


def _plt():
    # matplotlib costs a second or more to import; this module loads with the sweep-end Hydra callback at every start
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---- comparison.html -----------------------------------------------------------------------------------------

RUN_COLUMNS = (("label", "method"), ("value", None), ("status", "status"), ("trainable_params", "trainable"),
               ("trainable_pct", "trainable %"), ("train_seconds", "train s"), ("samples_per_second", "samples/s"),
               ("tokens_per_second", "tokens/s"), ("peak_mem_mb", "peak MB"), ("model_mb", "saved MB"),
               ("eval_loss", "eval loss"), ("learning_rate", "LR"), ("run", "run"), ("error", "error"))


def optuna_results(folder) -> dict | None:
    path = Path(folder) / "optuna.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _run_cell(row: dict, links: dict):
    name = esc(row["run"])
    return (f"<a href=\"{esc(links[row['run']])}\">{name}</a>" if row["run"] in links else name, row["run"])


def comparison_page(secs: dict, histories: dict, study: dict | None, links: dict) -> str:
    n = sum(len(g) for g in secs.values())
    failed = [r for g in secs.values() for r in g if r["status"] in ("failed", "died")]
    parts = [f"<p>{n} runs, {len(failed)} failed. Click a column header to sort. Each section is sorted by its "
             f"headline test metric, best first.</p>"]
    for (family, task), group in secs.items():
        metric = group[0]["metric"]
        better = "higher" if group[0]["greater_is_better"] else "lower"
        rows = [[_run_cell(r, links) if key == "run" else r[key] for key, _ in RUN_COLUMNS] for r in group]
        parts += [f"<h2>{esc(family)} \u00b7 {esc(task)} \u00b7 {esc(metric)} ({better} is better)</h2>",
                  table([h or metric for _, h in RUN_COLUMNS], rows,
                        row_class=["failed" if r["status"] in ("failed", "died") else "" for r in group],
                        kind="runs"),
                  png(figure({(family, task): group}, histories), f"{family} {task}: metric against cost, losses")]
    if failed:
        parts.append("<h2>Failed runs</h2><ul>" + "".join(
            f"<li><b>{esc(r['run'])}</b> ({esc(r['status'])}): <span class=\"error\">{esc(r['error'])}</span></li>"
            for r in failed) + "</ul>")
    if study:
        parts.append(optuna_section(study, links))
    return page("Fine-tuning comparison", "\n".join(parts))


def optuna_section(study: dict, links: dict) -> str:
    trials = study.get("trials") or []
    best = study.get("best") or {}
    parts = [f"<h2>Optuna study {esc(study.get('study_name'))}</h2>",
             f"<p>Objective: validation metric <b>{esc(study.get('objective'))}</b> ({esc(study.get('direction'))}); "
             f"{len(trials)} trials ({sum(t['state'] == 'complete' for t in trials)} complete) of "
             f"{esc(study.get('n_trials'))}; storage <code>{esc(study.get('storage'))}</code>.</p>"]
    if best:
        parts.append(f"<h3>Best trial: #{best['number']}, {esc(study.get('objective'))} = {fmt(best['value'])}</h3>"
                     + table(["parameter", "value"], [[k, v] for k, v in best["params"].items()], sortable=False)
                     + f"<p>Run directory: <code>{esc(best.get('run_dir'))}</code></p>")
    done = [t for t in trials if t["state"] == "complete"]
    if done:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.plot([t["number"] for t in done], [t["value"] for t in done], "o", label="trial")
        pick = max if study.get("direction") == "maximize" else min
        best_so_far, run = [], None
        for t in done:
            run = t["value"] if run is None else pick(run, t["value"])
            best_so_far.append(run)
        ax.step([t["number"] for t in done], best_so_far, where="post", color="C3", label="best so far")
        ax.set(xlabel="trial", ylabel=study.get("objective"), title="optimization history")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        parts.append(png(fig, "Optuna optimization history"))
    importances = study.get("importances") or {}
    if importances:
        plt = _plt()
        names = list(importances)[::-1]
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(names)))
        ax.barh(names, [importances[k] for k in names], color="C0")
        ax.set(xlabel="importance (fANOVA, normalised)", title="parameter importances")
        fig.tight_layout()
        parts.append(png(fig, "Optuna parameter importances"))
    names = sorted({k for t in trials for k in t["params"]})
    rows = [[t["number"], t["state"], t["value"], *[t["params"].get(k) for k in names],
             (esc(t.get("run_dir")), t.get("run_dir") or "")] for t in trials]
    parts.append("<h3>Trials</h3>" + table(["trial", "state", str(study.get("objective")), *names, "run"], rows,
                                           kind="trials", row_class=["best" if t["number"] == best.get("number") else
                                                      "failed" if t["state"] == "fail" else "" for t in trials]))
    return "\n".join(parts)


# ---- report.html (one run) -----------------------------------------------------------------------------------

def run_page(run_dir: Path, metrics: dict, cfg, command: str) -> str:
    config = OmegaConf.to_container(cfg, resolve=True)
    metric, larger = headline(config)
    parts = [f"<p>Run directory <code>{esc(run_dir)}</code>: {esc(metrics.get('family'))} \u00b7 "
             f"{esc(metrics.get('task'))} \u00b7 method {esc(metrics.get('method'))}.</p>",
             f"<h2>{esc(metric)} = {fmt(metrics.get(metric))} <span class=\"muted\">"
             f"({'higher' if larger else 'lower'} is better)</span></h2>",
             "<h3>Command</h3>", f"<pre>{esc(command)}</pre>"]
    hist = loss_history(run_dir)
    curves = {key: [(h["step"], h[key]) for h in hist if key in h and "step" in h] for key in ("loss", "eval_loss")}
    if any(curves.values()):
        plt = _plt()
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for key, ls in (("loss", "-"), ("eval_loss", "--")):
            if curves[key]:
                ax.plot(*zip(*curves[key]), ls=ls, marker=".", label=key)
        ax.set(xlabel="step", ylabel="loss", title="training (\u2014) and validation (- -) loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        parts += ["<h2>Loss curves</h2>", png(fig, "loss curves")]
    scalar = {k: v for k, v in sorted(metrics.items()) if isinstance(v, (int, float, str, bool)) or v is None}
    splits = sorted({k.split("_", 1)[1] for k in scalar if k.startswith(("eval_", "test_"))})
    parts += ["<h2>Validation and test metrics</h2>",
              table(["metric", "validation", "test"], [[n, scalar.get(f"eval_{n}"), scalar.get(f"test_{n}")]
                                                       for n in splits])]
    facts = {k: v for k, v in scalar.items() if not k.startswith(("eval_", "test_"))}
    samples = _samples(run_dir / "samples.jsonl")
    if samples:
        keys = list(dict.fromkeys(k for s in samples for k in s))
        parts += ["<h2>Samples</h2>", table(keys, [[_short(s.get(k)) for k in keys] for s in samples],
                                            sortable=False)]
    parts += ["<h2>Training and run facts</h2>", table(["fact", "value"], [[k, v] for k, v in facts.items()]),
              "<h2>Config</h2>", f"<pre>{esc(OmegaConf.to_yaml(cfg, resolve=True))}</pre>"]
    return page(f"Run report: {run_dir.name}", "\n".join(parts))


def _samples(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return [r if isinstance(r, dict) else {"sample": r} for r in rows]


def _short(value, limit: int = 600) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + " \u2026"


def reproduce_command() -> str:
    """The command that reruns this job: ``finetune`` + its task overrides (a sweep job's own, not the sweep's)."""
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # no Hydra context (run() called directly)
        overrides = sys.argv[1:]
    return "finetune " + " ".join(shlex.quote(str(o)) for o in overrides)


def write_run_report(run_dir: Path, metrics: dict, cfg, command: str) -> None:
    """report.html in the run directory; a report problem is logged, never fails a finished run."""
    try:
        write_atomic(Path(run_dir) / "report.html", run_page(Path(run_dir), metrics, cfg, command))
    except Exception as e:  # noqa: BLE001 - the model and metrics.json are already written
        log.warning("report.html not written: %s: %s", type(e).__name__, e)
