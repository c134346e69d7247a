"""The comparison's plots: per section, the headline metric against each cost (Pareto front marked) and the loss
curves. matplotlib is imported inside the functions: the comparison module is a Hydra callback, loaded at every
start (pipeline/reports/compare.py), and matplotlib costs a second or more to import."""

from __future__ import annotations

import os
from pathlib import Path

COSTS = (("trainable_params", "trainable parameters", True), ("train_seconds", "train time (s)", False),
         ("peak_mem_mb", "peak memory (MB)", False))


def pareto(points: list[tuple[float, float]], larger_better: bool) -> list[int]:
    """Indices of points no other point beats on both cost (lower) and value."""
    def beats(a, b):
        va, vb = (a[1], b[1]) if larger_better else (-a[1], -b[1])
        return a[0] <= b[0] and va >= vb and (a[0] < b[0] or va > vb)

    return [i for i, p in enumerate(points) if not any(beats(q, p) for j, q in enumerate(points) if j != i)]


def figure(secs: dict, histories: dict):
    """One row of plots per section: the metric against each cost (Pareto front marked), and the loss curves."""
    import matplotlib  # see the module docstring

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
    import matplotlib.pyplot as plt  # see the module docstring

    fig = figure(secs, histories)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=90, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    os.replace(tmp, path)  # whole or not at all
