"""Readable runs: the composed config as a tree at start, a summary table at the end (rich), main process only.

Quiet mode (``quiet=true`` or FINETUNE_QUIET=1, for CI): no tree, no progress bars (datasets, Trainer, hub), and one
final line: ``done: test_<metric>=... model: ... metrics: ...``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from pipeline.infra.distributed import is_main
from pipeline.reports.runs import headline

SUMMARY_KEYS = ("train_loss", "train_runtime", "train_samples_per_second", "train_tokens_per_second",
                "trainable_params", "total_params", "peak_rss_mb", "peak_gpu_mem_mb", "wall_seconds")


def is_quiet(cfg) -> bool:
    return bool(cfg.get("quiet")) or os.environ.get("FINETUNE_QUIET") == "1"


def start(cfg) -> None:
    """Before the run: quiet settings, or the config tree."""
    if is_quiet(cfg):
        os.environ.update(HF_DATASETS_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
                          TRANSFORMERS_VERBOSITY=os.environ.get("TRANSFORMERS_VERBOSITY", "error"))
        cfg.trainer.disable_tqdm = True

        if "datasets" in sys.modules:  # already imported: the env var is read at import time
            sys.modules["datasets"].disable_progress_bars()

        for handler in logging.getLogger().handlers:  # Hydra's console handler; its log file keeps everything
            if type(handler) is logging.StreamHandler:
                handler.setLevel(logging.WARNING)
    elif is_main():
        print_config_tree(cfg)


def quiet_trainer(trainer, cfg) -> None:
    """Quiet mode: without progress bars the Trainer prints each log dict; drop those printers too."""
    if is_quiet(cfg):
        # transformers costs seconds to import: this module is on the app's start-up path
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        for callback in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(callback)


def config_tree(cfg):
    def add(node, branch):
        for key, value in node.items():
            if isinstance(value, dict):
                add(value, branch.add(f"[bold]{key}[/]"))
            else:
                branch.add(f"{key}: [cyan]{value!r}[/]" if isinstance(value, str) else f"{key}: [cyan]{value}[/]")

    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        data = OmegaConf.to_container(cfg, resolve=False)
    tree = Tree(f"[bold]config[/] ({cfg.get('name')})")
    order = ["model", "task", "data", "method", "trainer", "logger", "hub"]
    add({k: data[k] for k in order if k in data}, tree)
    add({k: v for k, v in data.items() if k not in order}, tree)
    return tree


def print_config_tree(cfg) -> None:
    Console(stderr=False, soft_wrap=True).print(config_tree(cfg))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def written(cfg, run_dir: Path, hub_url: str | None = None) -> list[tuple[str, Path | str]]:
    """(what, where) for everything the run wrote that exists."""
    run_dir = Path(run_dir)
    items = [("model + card", run_dir / "model"), ("metrics", run_dir / "metrics.json"),
             ("samples", run_dir / "samples.jsonl"), ("config", run_dir / ".hydra" / "config.yaml"),
             ("tensorboard", run_dir / "tensorboard"), ("mlflow store", run_dir / "mlflow.db"),
             ("wandb (offline)", run_dir / "wandb"), ("checkpoints", run_dir / "checkpoints")]
    out = [(k, p) for k, p in items if p.exists()]
    if hub_url:
        out.append(("hub", hub_url))
    return out


def summary_table(cfg, metrics: dict, run_dir: Path, hub_url: str | None = None):
    model = cfg.model.name_or_path if cfg.model.init == "pretrained" else f"a tiny scratch {cfg.model.family}"
    table = Table(title=f"{cfg.get('name')}: {cfg.task.name} with {model} ({cfg.method.name})", header_style="bold")
    table.add_column("metric / output")
    table.add_column("value", overflow="fold")
    key = headline(cfg)[0]  # the documented headline (task.report_metric or task.metric), as in the comparison
    scores = sorted(k for k, v in metrics.items() if k.startswith(("eval_", "test_")) and isinstance(v, float)
                    and not k.endswith(("_runtime", "_per_second", "_number")))
    for k in scores:
        table.add_row(f"[bold green]{k}[/]" if k == key else k, _fmt(metrics[k]))
    table.add_section()
    for k in SUMMARY_KEYS:
        if k in metrics:
            table.add_row(k, _fmt(metrics[k]))
    table.add_section()
    for what, where in written(cfg, run_dir, hub_url):
        table.add_row(what, str(where))
    return table


def final_line(cfg, metrics: dict, run_dir: Path) -> str:
    key = headline(cfg)[0]
    value = metrics.get(key)
    run_dir = Path(run_dir)
    return (f"done: {key}={value:.4f}  model: {run_dir / 'model'}  metrics: {run_dir / 'metrics.json'}"
            if isinstance(value, float) else f"done: {run_dir}")


def finish(cfg, metrics: dict, run_dir: Path, hub_url: str | None = None) -> None:
    """After the run (main process): the summary table unless quiet, then the one final line."""
    if not is_main():
        return
    if not is_quiet(cfg):
        Console(soft_wrap=True).print(summary_table(cfg, metrics, run_dir, hub_url))
    print(final_line(cfg, metrics, run_dir), flush=True)
