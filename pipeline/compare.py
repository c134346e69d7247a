"""``finetune-compare DIR... [--out DIR]``: one report from any set of finished (or failed) runs.

Scans the directories recursively for run directories (a ``metrics.json`` or ``status.json``) and writes
comparison.md / .csv / .json / .png / .html (pipeline/html_report.py): per family, a table sorted by the headline
metric (failed runs last, with their error), the metric against trainable parameters (log x), train time and peak
memory with the Pareto front marked, the train / eval loss curves, and an Optuna study when the folder holds one.
It also runs at the end of every ``--multirun`` sweep (``CompareOnMultirunEnd``, conf/hydra/default.yaml).
Each run's headline and direction come from its own .hydra/config.yaml (``headline``): no task is named here.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

COLUMNS = ("run", "family", "task", "method", "status", "metric", "value", "trainable_params", "total_params",
           "trainable_pct", "train_seconds", "samples_per_second", "tokens_per_second", "peak_mem_mb",
           "model_mb", "eval_loss", "learning_rate", "greater_is_better", "label", "error")
COSTS = (("trainable_params", "trainable parameters", True), ("train_seconds", "train time (s)", False),
         ("peak_mem_mb", "peak memory (MB)", False))
SKIP_PARTS = {"checkpoints", "model", "merged", ".hydra", "tensorboard"}


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def find_runs(dirs) -> list[Path]:
    found = set()
    for d in map(Path, dirs):
        for name in ("metrics.json", "status.json"):
            for f in d.rglob(name):
                if not SKIP_PARTS & set(f.relative_to(d).parts[:-1]):
                    found.add(f.parent)
    return sorted(found)


def _hydra_cfg(run: Path) -> dict:
    path = run / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # a damaged config.yaml: the run is still listed, with what metrics.json says
        log.warning("%s: unreadable (%s)", path, type(e).__name__)
        return {}


def loss_history(run: Path) -> list[dict]:
    """Trainer log_history: the run's log_history.json, else the latest checkpoint's trainer_state.json."""
    if (run / "log_history.json").is_file():
        return _json(run / "log_history.json") or []
    states = sorted(run.glob("checkpoints/checkpoint-*/trainer_state.json"),
                    key=lambda p: int(p.parent.name.rsplit("-", 1)[-1]))
    return _json(states[-1]).get("log_history", []) if states else []


def headline(cfg: dict) -> tuple[str, bool]:
    """(metric key, larger is better) of a run from its config: ``test_<task.report_metric or task.metric>`` and
    ``task.greater_is_better``. A run without a readable config: test_loss, smaller better."""
    task = cfg.get("task") or {}
    name = task.get("report_metric") or task.get("metric") or "loss"
    return f"test_{name}", bool(task.get("greater_is_better", False))


def read_run(run: Path, root: Path) -> dict:
    from pipeline.lock import read_status

    m, cfg = _json(run / "metrics.json"), _hydra_cfg(run)
    status = read_status(run) if (run / "status.json").is_file() else {}
    task = m.get("task") or cfg.get("task", {}).get("name", "?")
    metric, greater = headline(cfg)  # the run's own task config: its headline metric and direction
    total = m.get("total_params")
    row = {
        "run": str(run.relative_to(root)),
        "family": m.get("family") or cfg.get("model", {}).get("family", "?"),
        "task": task, "method": m.get("method") or cfg.get("method", {}).get("name", "?"),
        "status": status.get("status") or ("completed" if m else "unknown"),
        "metric": metric, "value": m.get(metric),
        "trainable_params": m.get("trainable_params"), "total_params": total,
        "trainable_pct": 100 * m["trainable_ratio"] if "trainable_ratio" in m else None,
        "train_seconds": m.get("train_runtime"), "samples_per_second": m.get("train_samples_per_second"),
        "tokens_per_second": m.get("train_tokens_per_second"),
        "peak_mem_mb": m.get("peak_gpu_mem_mb") or m.get("peak_rss_mb"),
        "model_mb": m["model_bytes"] / 2 ** 20 if "model_bytes" in m else None,
        "eval_loss": m.get("eval_loss"), "learning_rate": _learning_rate(cfg),
        "greater_is_better": greater,
        "error": status.get("error", "") if status.get("status") in ("failed", "died") else "",
    }
    if row["status"] == "completed" and not m:
        row["status"] = "incomplete"
    return row


def _learning_rate(cfg: dict) -> float | None:
    """The run's effective learning rate: trainer.learning_rate x method.lr_scale (from .hydra/config.yaml)."""
    try:
        return float(cfg["trainer"]["learning_rate"]) * float(cfg.get("method", {}).get("lr_scale") or 1.0)
    except (KeyError, TypeError, ValueError):
        return None


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


def pareto(points: list[tuple[float, float]], larger_better: bool) -> list[int]:
    """Indices of points no other point beats on both cost (lower) and value."""
    def beats(a, b):
        va, vb = (a[1], b[1]) if larger_better else (-a[1], -b[1])
        return a[0] <= b[0] and va >= vb and (a[0] < b[0] or va > vb)

    return [i for i, p in enumerate(points) if not any(beats(q, p) for j, q in enumerate(points) if j != i)]


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


def figure(secs: dict, histories: dict):
    """One row of plots per section: the metric against each cost (Pareto front marked), and the loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(secs), 4, figsize=(22, 4.2 * len(secs)), squeeze=False)
    for row_axes, ((family, task), group) in zip(axes, secs.items()):
        larger = group[0]["greater_is_better"] if group else False
        done = [r for r in group if isinstance(r["value"], (int, float))]
        for ax, (key, label, logx) in zip(row_axes, COSTS):
            pts = [(r[key], r["value"], r["label"]) for r in done if isinstance(r[key], (int, float))]
            front = set(pareto([(x, y) for x, y, _ in pts], larger))
            for i, (x, y, name) in enumerate(pts):
                ax.scatter(x, y, s=60, marker="*" if i in front else "o", color="C3" if i in front else "C0")
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            if front:
                fx = sorted((pts[i][0], pts[i][1]) for i in front)
                ax.plot(*zip(*fx), color="C3", lw=1, ls="--", label="Pareto front")
                ax.legend(fontsize=8)
            if logx and pts:
                ax.set_xscale("log")
            ax.set(xlabel=label, ylabel=group[0]["metric"], title=f"{family} · {task}")
            ax.grid(alpha=0.3)
        ax = row_axes[3]
        for i, r in enumerate(group):
            hist = histories.get(r["run"], [])
            for key, ls in (("loss", "-"), ("eval_loss", "--")):
                pts = [(h["step"], h[key]) for h in hist if key in h and "step" in h]
                if pts:
                    ax.plot(*zip(*pts), ls=ls, marker=".", color=f"C{i % 10}", label=f"{r['label']} {key}")
        ax.set(xlabel="step", ylabel="loss", title=f"{family}: train (—) / eval (- -) loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: curves stay visible
    fig.tight_layout()
    return fig


def plot(secs: dict, histories: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = figure(secs, histories)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def compare(dirs, out=None) -> dict:
    """Write comparison.{md,csv,json,png} to ``out`` (default: the first directory); returns the sections."""
    dirs = [Path(d) for d in dirs]
    out = Path(out) if out else dirs[0]
    runs = [r.resolve() for r in find_runs(dirs)]
    root = Path(os.path.commonpath(runs)) if len(runs) > 1 else (runs[0].parent if runs else out)
    rows = [read_run(r, root) for r in runs]
    secs = sections(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(markdown(secs))
    with open(out / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(r for g in secs.values() for r in g)
    (out / "comparison.json").write_text(json.dumps(
        {"sections": [{"family": fam, "task": task, "runs": g} for (fam, task), g in secs.items()]}, indent=2))
    histories = {r["run"]: loss_history(p) for r, p in zip(rows, runs)}
    plot(secs or {("none", "none"): []}, histories, out / "comparison.png")
    from pipeline import html_report

    study = next((s for s in map(html_report.optuna_results, dirs) if s), None)  # optuna.json of a search
    links = {r["run"]: os.path.relpath(p / "report.html", out) for r, p in zip(rows, runs)
             if (p / "report.html").is_file()}
    html_report.write_atomic(out / "comparison.html", html_report.comparison_page(secs, histories, study, links))
    return secs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="finetune-compare", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="run directories or folders holding them (searched recursively)")
    parser.add_argument("--out", help="where the comparison files go (default: the first directory)")
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not Path(d).is_dir()]
    if missing:
        print(f"error: {missing[0]}: no such directory; give run directories or a multirun folder", file=sys.stderr)
        sys.exit(2)
    from pipeline.lock import unwritable_reason

    why = unwritable_reason(args.out or args.dirs[0])
    if why:
        print(f"error: --out {args.out or args.dirs[0]}: cannot write the report there ({why}); give a writable "
              f"folder with --out", file=sys.stderr)
        sys.exit(2)
    secs = compare(args.dirs, args.out)
    out = Path(args.out or args.dirs[0])
    n = sum(len(g) for g in secs.values())
    failed = sum(r["status"] in ("failed", "died") for g in secs.values() for r in g)
    print((out / "comparison.md").read_text())
    print(f"{n} runs ({failed} failed): {out / 'comparison.md'} .csv .json .png .html")


try:  # Hydra is a dependency; the callback is referenced from conf/hydra/default.yaml
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object


class CompareOnMultirunEnd(Callback):
    """After a ``--multirun`` sweep: the comparison report in the sweep directory."""

    def on_multirun_end(self, config, **kwargs) -> None:
        from pipeline.distributed import rank

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


if __name__ == "__main__":
    main()
