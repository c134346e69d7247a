"""Experiment tracking through the Trainer's own integrations (``trainer.report_to``), chosen by ``logger=``.

The logger group (conf/logger/) sets ``trainer.report_to``; this module sets what those callbacks read from the
environment, and adds what they do not log: the resolved Hydra config as flattened parameters, the final test
metrics, and (MLflow) metrics.json + the model card as artifacts. Nothing here needs a network.

- tensorboard: event files in <run>/tensorboard; the config and final metrics in the HPARAMS tab.
- mlflow: the pipeline opens the MLflow run before training, so the Trainer's MLflowCallback logs into it (and does
  not end it at train end: evaluation and the final metrics land in the same run). Store: ``logger.tracking_uri``
  or sqlite:///<run>/mlflow.db. Params: ``cfg.<dotted.key>``.
- wandb: offline mode in <run>/wandb; the config goes into ``wandb.config["cfg"]``.
Only the main process tracks.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.errors import ConfigError
from pipeline.infra.distributed import is_main
from pipeline.integrations import scrub

log = logging.getLogger(__name__)
PIP_NAME = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}


def logger_name(cfg) -> str:
    return str((cfg.get("logger") or {}).get("name") or "none")


def check(cfg) -> None:
    """Before heavy work: the chosen tracker is installed."""
    name = logger_name(cfg)
    if name in PIP_NAME and importlib.util.find_spec(name) is None:
        raise ConfigError(f"logger={name} needs the '{name}' package: pip install {PIP_NAME[name]} "
                          f"(or logger=none / logger=tensorboard)")


def flat_config(cfg) -> dict:
    """The resolved config as ``{"a.b.c": value}`` (lists as strings), absolute paths and secrets scrubbed."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that needs a Hydra context (in-process use): keep it as written
        tree = OmegaConf.to_container(cfg, resolve=False)
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node if isinstance(node, (int, float, str, bool)) or node is None else str(node)

    walk(tree, "")
    return scrub.params(out)  # trackers are often shared: no local paths, no secrets


def final_metrics(metrics: dict) -> dict:
    """The numeric, finite top-level values of metrics.json."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def setup(cfg, run_dir: Path) -> None:
    """Environment for the Trainer's callbacks, and (main process) the tracker's run with the config as params.
    ``check(cfg)`` ran in the check stage."""
    name, run_dir = logger_name(cfg), Path(run_dir).resolve()
    if name == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")  # per run, also in a sweep
    elif name == "mlflow":
        _mlflow_start(cfg, run_dir)
    elif name == "wandb":
        _wandb_start(cfg, run_dir)


def _mlflow_start(cfg, run_dir: Path) -> None:
    uri = cfg.logger.get("tracking_uri") or f"sqlite:///{run_dir / 'mlflow.db'}"
    os.environ.update(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME=str(cfg.logger.experiment),
                      MLFLOW_FLATTEN_PARAMS="TRUE")  # the callback's TrainingArguments + model config, flattened
    if not is_main():
        return
    import mlflow  # optional package (the mlflow extra): imported only for logger=mlflow

    if mlflow.active_run() is not None:  # left open by a failed run earlier in this process (a sweep)
        mlflow.end_run(status="FAILED")
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(str(cfg.logger.experiment))
    if experiment is None:
        location = (run_dir / "mlartifacts").as_uri() if not cfg.logger.get("tracking_uri") else None
        experiment_id = mlflow.create_experiment(str(cfg.logger.experiment), artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.start_run(experiment_id=experiment_id, run_name=run_dir.name,
                     tags=scrub.params({"task": str(cfg.task.name), "model": str(cfg.model.name_or_path),
                                        "method": str(cfg.method.name), "run_dir": run_dir.name}))
    params = {f"cfg.{k}": str(v)[:1000] for k, v in flat_config(cfg).items()}
    items = list(params.items())
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
        mlflow.log_params(dict(items[i:i + 100]))
    log.info("mlflow: run %s in %s", mlflow.active_run().info.run_id, uri)


def _wandb_start(cfg, run_dir: Path) -> None:
    mode = str(cfg.logger.get("mode") or "offline")
    (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    os.environ.update(WANDB_MODE=mode, WANDB_DIR=str(run_dir), WANDB_PROJECT=str(cfg.logger.project))
    if not is_main():
        return
    import wandb  # optional package (the wandb extra): imported only for logger=wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1)
    # the Trainer's WandbCallback finds this run and adds TrainingArguments + model config to it
    wandb.init(project=str(cfg.logger.project), name=run_dir.name, dir=str(run_dir), mode=mode,
               config={"cfg": flat_config(cfg)})


def finish(cfg, run_dir: Path, metrics: dict) -> None:
    """Main process, after the report stage: final metrics (and artifacts) into the tracker; close its run."""
    name, run_dir = logger_name(cfg), Path(run_dir).resolve()
    if not is_main() or name == "none":
        return
    values = final_metrics(metrics)
    if name == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        hparams = {k: v for k, v in flat_config(cfg).items() if isinstance(v, (int, float, str, bool))}
        keys = [k for k in values if k.startswith(("test_", "eval_"))] or list(values)
        with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as w:
            w.add_hparams(hparams, {f"final/{k}": values[k] for k in keys}, run_name="hparams")
    elif name == "mlflow":
        import mlflow

        if mlflow.active_run() is None:
            return
        mlflow.log_metrics({f"final/{k}": v for k, v in values.items()})
        if cfg.logger.get("log_artifacts", True):
            mlflow.log_text(scrub.text(OmegaConf.to_yaml(cfg)), "config.yaml")  # the resolved config, scrubbed
            for path in (run_dir / "metrics.json", run_dir / "model" / "README.md"):
                if path.is_file():
                    mlflow.log_artifact(str(path))
        mlflow.end_run()
    elif name == "wandb":
        import wandb

        if wandb.run is not None:
            wandb.run.summary.update({f"final/{k}": v for k, v in values.items()})
            wandb.finish()


def fail() -> None:
    """A run failed: close the tracker's run as failed (no-op when nothing was opened)."""
    if "mlflow" in sys.modules and sys.modules["mlflow"].active_run() is not None:
        sys.modules["mlflow"].end_run(status="FAILED")
    if "wandb" in sys.modules and getattr(sys.modules["wandb"], "run", None) is not None:
        sys.modules["wandb"].finish(exit_code=1)
