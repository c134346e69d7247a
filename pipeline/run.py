"""One fine-tuning run, stage by stage: setup (check, data, model, method) -> train -> evaluate -> report.

Stages hand plain values to the next; the run directory is the only thing shared on disk. Only the main process
writes files. ``status.json`` says running / completed / failed; ``model/`` and ``metrics.json`` appear only
when complete (written aside, then renamed).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from pathlib import Path

from pipeline.paths import publish_dir, write_json_atomic

log = logging.getLogger("pipeline")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def write_status(run_dir: Path, status: str, **extra) -> None:
    if is_main_process():
        write_json_atomic(run_dir / "status.json", {"status": status, "time": time.time(), **extra})


def run(cfg, run_dir: Path) -> dict:
    from pipeline import check, evaluation, methods, models, report, train
    from pipeline.data import load_raw
    from pipeline.families import get_family
    from pipeline.tasks import get_task

    t0 = time.time()
    # -- setup ---------------------------------------------------------------------------------------------------
    check.validate(cfg)
    task = get_task(cfg)
    raw = load_raw(cfg.data, task.name, int(cfg.seed))
    task.prepare(raw)
    log.info("data: %s", {k: len(v) for k, v in raw.items()})
    tokenizer, model = models.load(cfg, task, raw)
    check.post_load(cfg, task, model, tokenizer)
    t_tok = time.time()
    tokenized = task.preprocess(raw, tokenizer, model)
    tokenize_seconds = time.time() - t_tok
    model = methods.apply(cfg.method, model, get_family(cfg.model.family), task)
    args = train.training_args(cfg, task, run_dir)
    trainer = train.build_trainer(cfg, task, model, tokenizer, tokenized, args)
    # -- train ---------------------------------------------------------------------------------------------------
    metrics = {}
    if cfg.do_train:
        metrics.update(train.train(trainer))
    # -- evaluate ------------------------------------------------------------------------------------------------
    if cfg.do_eval:
        metrics.update(evaluation.evaluate(trainer, task, tokenizer, raw, tokenized, int(cfg.num_samples), run_dir))
    # -- report (main process only) ------------------------------------------------------------------------------
    metrics.update(report.run_facts(cfg, trainer.model, task, raw, tokenized, metrics, world_size()))
    metrics.update(tokenize_seconds=tokenize_seconds, wall_seconds=time.time() - t0,
                   best_checkpoint=trainer.state.best_model_checkpoint)
    if trainer.is_world_process_zero():
        partial = run_dir / ".model.partial"
        trainer.save_model(str(partial))
        (partial / "training_args.bin").unlink(missing_ok=True)  # a pickle; the resolved config is in .hydra/
        command = "finetune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        (partial / "README.md").write_text(report.model_card(cfg, metrics, command))
        publish_dir(partial, run_dir / "model")
        write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics
