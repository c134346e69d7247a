"""Reading run directories: which folders are runs, each run's row (metrics.json, status.json, .hydra/config.yaml),
its headline metric and its loss history. Used by the comparison (``compare``) and the HTML pages (``html``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.infra.rundir import read_status

log = logging.getLogger(__name__)

SKIP_PARTS = {"checkpoints", "model", "merged", ".hydra", "tensorboard"}


def family_of_config(model: dict) -> str:
    """A run's family from its composed config (a run refused before metrics.json): model.family when given, else
    the type its model file builds (model.scratch.model_type)."""
    return str(model.get("family") or (model.get("scratch") or {}).get("model_type") or "?")


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
    m, cfg = _json(run / "metrics.json"), _hydra_cfg(run)
    status = read_status(run) if (run / "status.json").is_file() else {}
    task = m.get("task") or cfg.get("task", {}).get("name", "?")
    metric, greater = headline(cfg)  # the run's own task config: its headline metric and direction
    total = m.get("total_params")
    row = {
        "run": str(run.relative_to(root)),
        "family": m.get("family") or family_of_config(cfg.get("model") or {}),
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
