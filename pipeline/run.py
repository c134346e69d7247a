"""One fine-tuning run, stage by stage: setup (check, data, model, method) -> train -> evaluate -> rlhf -> report.

Stages hand plain values to the next (a ``Run`` holds them); the run directory is the only thing shared on disk.
Only the main process writes files. ``status.json`` says running / completed / failed; ``model/`` and
``metrics.json`` appear only when complete (written aside, then renamed).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import distributed
from pipeline.paths import publish_dir, write_json_atomic

log = logging.getLogger("pipeline")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def write_status(run_dir: Path, status: str, **extra) -> None:
    if is_main_process():
        write_json_atomic(run_dir / "status.json", {"status": status, "time": time.time(), "pid": os.getpid(),
                                                    **extra})  # running + no live lock holder: lock.read_status


@dataclass
class Run:
    """What the stages produce and pass on."""
    cfg: Any
    run_dir: Path
    task: Any = None
    raw: Any = None
    tokenizer: Any = None
    model: Any = None
    tokenized: Any = None
    trainer: Any = None
    metrics: dict = field(default_factory=dict)
    resume: str | None = None     # checkpoint to continue from (pipeline/resume.py)
    t0: float = field(default_factory=time.time)


def setup(r: Run) -> None:
    """check -> data -> model -> method -> trainer."""
    from pipeline import (callbacks, check, cluster, config, console, guards, methods, models, resume, scrub, tracking,
                          train)
    from pipeline.data import load_raw
    from pipeline.families import get_family
    from pipeline.tasks import get_task

    # checked, derived (batch plan, learning rate x method.lr_scale, auto speed-ups, ...), then read-only
    cfg = r.cfg = config.resolve(r.cfg, r.run_dir)
    check.environment(cfg)  # the model reachable from here, tracker installed, Hub reachable for a push
    r.resume = resume.resolve(cfg.get("resume"), r.run_dir, tidy=is_main_process())
    r.task = get_task(cfg)
    r.raw, dropped = load_raw(cfg.data, r.task, int(cfg.seed))
    if dropped:
        r.metrics["data_dropped_rows"] = dropped  # {split: {reason: rows}}
    r.task.prepare(r.raw)
    log.info("data: %s", {k: len(v) for k, v in r.raw.items()})
    r.tokenizer, r.model = models.load(cfg, r.task, r.raw)
    r.task.adapt(r.tokenizer, r.model)
    check.post_load(cfg, r.task, r.model, r.tokenizer)
    t = time.time()
    r.tokenized, cut = r.task.cut_counts(r.task.preprocess(r.raw, r.tokenizer, r.model))
    r.metrics["tokenize_seconds"] = time.time() - t
    if cut:
        r.metrics["data_truncated"] = cut  # {split: {what: examples (or tokens)}}
    r.model = methods.apply(cfg.method, r.model, get_family(cfg.model.family), r.task,
                            total_steps=methods.total_steps(cfg.trainer, len(r.tokenized["train"]), world_size()),
                            keep_base=cfg.model.init == "scratch")
    tracking.setup(cfg, r.run_dir)  # logger=: env for the Trainer's callbacks; MLflow/W&B run with the config
    args = train.training_args(cfg, r.task, r.run_dir)
    r.trainer = train.build_trainer(cfg, r.task, r.model, r.tokenizer, r.tokenized, args)
    scrub.trainer_callbacks(r.trainer)  # trackers log TrainingArguments / model config without paths or secrets
    callbacks.attach(r.trainer, r.task)  # PEFT glue: AdaLoRA budget, label padding for virtual tokens
    guards.install(r.trainer)  # COMPLETE marker per checkpoint, stop on NaN/inf loss
    cluster.attach(r.trainer)  # submitit jobs: preemption signal -> checkpoint at the step's end -> requeue
    console.quiet_trainer(r.trainer, cfg)  # quiet=true: no per-step log prints either


def train_stage(r: Run) -> None:
    from pipeline import train

    if r.cfg.do_train:
        r.metrics.update(train.train(r.trainer, resume_from_checkpoint=r.resume))


def evaluate_stage(r: Run) -> None:
    from pipeline import evaluation

    if r.cfg.do_eval:
        r.metrics.update(evaluation.evaluate(r.trainer, r.task, r.tokenizer, r.raw, r.tokenized,
                                             int(r.cfg.num_samples), r.run_dir))


def rlhf_stage(r: Run) -> None:
    """Optional RLHF after supervised fine-tuning (conf/rlhf/); nothing when ``rlhf`` is null."""
    if r.cfg.get("rlhf"):
        from pipeline.rlhf import run_rlhf

        r.metrics.update(run_rlhf(r))


def report_stage(r: Run) -> None:
    from pipeline import callbacks, report

    m = r.metrics
    m.update(report.run_facts(r.cfg, r.trainer.model, r.task, r.raw, r.tokenized, m, world_size()))
    m.update(wall_seconds=time.time() - r.t0, best_checkpoint=r.trainer.state.best_model_checkpoint)
    m.update(distributed.run_facts(r.trainer))  # every rank: effective batch, replicas in sync (a collective)
    partial = r.run_dir / ".model.partial"
    r.trainer.save_model(str(partial))  # every rank (FSDP / ZeRO-3 gather weights collectively); rank 0 writes
    if r.trainer.is_world_process_zero():
        (partial / "training_args.bin").unlink(missing_ok=True)  # a pickle; the resolved config is in .hydra/
        callbacks.save_base(r.trainer.model, partial)  # PEFT: base/config.json (+ scratch base weights)
        from pipeline.html_report import reproduce_command, write_run_report

        command = reproduce_command()  # this job's overrides (a sweep job's own; submitit jobs have no argv)
        (partial / "README.md").write_text(report.model_card(r.cfg, m, command))
        publish_dir(partial, r.run_dir / "model")
        m["model_bytes"] = sum(f.stat().st_size for f in (r.run_dir / "model").rglob("*") if f.is_file())
        write_json_atomic(r.run_dir / "log_history.json", r.trainer.state.log_history)  # loss curves (compare)
        write_json_atomic(r.run_dir / "metrics.json", m)
        write_run_report(r.run_dir, m, r.cfg, command)  # report.html: metrics, loss curves, samples, config


def publish_stage(r: Run) -> None:
    """Main process: final metrics (+ artifacts) into the tracker, then model/ + card to the Hub if hub.push."""
    from pipeline import hub, tracking

    if is_main_process():
        tracking.finish(r.cfg, r.run_dir, r.metrics)
        pushed = hub.push_or_explain(r.cfg, r.run_dir)  # a failed upload leaves the run complete, says how to retry
        if pushed:
            r.metrics.update(pushed)
            write_json_atomic(r.run_dir / "metrics.json", r.metrics)


STAGES = (setup, train_stage, evaluate_stage, rlhf_stage, report_stage, publish_stage)


def run(cfg, run_dir: Path) -> dict:
    from pipeline.report import reset_peak_memory

    reset_peak_memory()  # peak memory per run, also when a sweep runs several in one process
    r = Run(cfg=cfg, run_dir=Path(run_dir))
    for stage in STAGES:
        stage(r)
    return r.metrics
