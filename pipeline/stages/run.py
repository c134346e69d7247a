"""One fine-tuning run, stage by stage, in the order the README draws them:

    check -> data -> model -> method -> train -> evaluate -> rlhf -> report -> publish

Each stage is one function of a ``Run`` (``STAGES``): it reads what earlier stages put there and adds its own plain
values; the run directory is the only thing shared on disk. The config is resolved and checked once, by the check
stage (pipeline/stages/resolve.py), and is read-only from then on. Only the main process writes files.
``model/`` and ``metrics.json`` appear only when complete (written aside, then renamed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from pipeline import rlhf
from pipeline.data import load_data, streaming
from pipeline.families import model_family
from pipeline.infra import cluster, distributed, resume
from pipeline.integrations import hub, scrub, tracking
from pipeline.models import load, methods, peft_glue
from pipeline.reports import card, console, pages
from pipeline.rlhf.common import save_model, unwrap
from pipeline.stages import check, evaluate, resolve
from pipeline.tasks import get_task
from pipeline.training import guards, trainer
from pipeline.training.memory import reset_peak_memory
from pipeline.util.paths import publish_dir, write_json_atomic

log = logging.getLogger("pipeline")


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
    resume: str | None = None     # checkpoint to continue from (pipeline/infra/resume.py)
    per_source: dict = field(default_factory=dict)  # data.mixture: {source: raw DatasetDict(validation, test)}
    per_source_tokenized: dict = field(default_factory=dict)  # ... and tokenised
    stream: Any = None  # data.streaming: the training rows as an IterableDataset, raw then tokenised
    t0: float = field(default_factory=time.time)


def check_stage(r: Run) -> None:
    """The config resolved once (types, ranges, derived values, cross-field checks, the libraries' own config
    validation), then read-only; the machine checked (model reachable, tracker installed, Hub for a push); the run
    directory checked (an earlier run there); the task object; the checkpoint to resume from. Nothing is written
    before this stage has passed (pipeline/commands/app.py)."""
    r.cfg = resolve.resolve(r.cfg, r.run_dir)
    check.environment(r.cfg)
    check.earlier_run(r.cfg, r.run_dir)  # a finished run, or a run of another task, is not replaced or resumed
    r.task = get_task(r.cfg)
    r.resume = resume.resolve(r.cfg.get("resume"), r.run_dir, tidy=distributed.is_main())  # last: it tidies


def data_stage(r: Run) -> None:
    """Raw splits with the task's columns; dropped rows counted per reason; the task's look at the whole data (label
    sets, tag scheme: ``task.data_facts``); the caps' rows kept and set aside."""
    loaded = load_data(r.cfg.data, r.task, int(r.cfg.seed))
    r.raw, dropped, capped, r.per_source = loaded.raw, loaded.dropped, loaded.capped, loaded.per_source
    r.stream = loaded.stream
    if loaded.streaming:
        r.metrics["data_streaming"] = loaded.streaming  # the head read up front, shuffle buffer, batch rows
    if loaded.mixture:
        r.metrics["data_mixture"] = loaded.mixture  # rows drawn per source and split (pipeline/data/mixture.py)
    if dropped:
        r.metrics["data_dropped_rows"] = dropped  # {split: {reason: rows}}
    if capped:
        r.metrics["data_capped"] = capped  # {split: {kept, set_aside}}
    r.metrics.update(r.task.data_facts())
    log.info("data: %s", {k: len(v) for k, v in r.raw.items()})


def model_stage(r: Run) -> None:
    """Tokenizer + model, what the task adds to them (a chat template's tokens), the checks that need the model,
    then the data tokenised for them (cuts counted)."""
    r.tokenizer, r.model = load.load(r.cfg, r.task, r.raw)
    r.task.adapt(r.tokenizer, r.model)
    check.post_load(r.cfg, r.task, r.model, r.tokenizer)
    t = time.time()
    for name, splits in r.per_source.items():  # before the combined splits: their cut counts are the run's
        # tasks' preprocess reads a train split: the validation split stands in for it (a single row could keep no
        # trained token within the block and be refused), then is dropped
        splits = DatasetDict({"train": splits["validation"], **splits})
        tokenized = r.task.cut_counts(r.task.preprocess(splits, r.tokenizer, r.model))[0]
        r.per_source_tokenized[name] = DatasetDict({k: tokenized[k] for k in ("validation", "test")})
    r.tokenized, cut = r.task.cut_counts(r.task.preprocess(r.raw, r.tokenizer, r.model))
    if r.stream is not None:  # tokenised (and packed) on the fly while training (pipeline/data/streaming.py)
        r.stream = streaming.tokenize(r.task, r.stream, r.metrics["data_streaming"]["columns"], r.tokenizer,
                                      r.model, int(r.cfg.data.stream_batch))
    r.metrics["tokenize_seconds"] = time.time() - t
    if cut:
        r.metrics["data_truncated"] = cut  # {split: {what: examples (or tokens)}}


def method_stage(r: Run) -> None:
    """Full, freeze or a PEFT method applied to the model (pipeline/models/methods.py)."""
    cfg = r.cfg
    steps = methods.total_steps(cfg.trainer, len(r.tokenized["train"]), distributed.world_size())
    r.model = methods.apply(cfg.method, r.model, model_family(cfg.model), r.task, total_steps=steps,
                            keep_base=cfg.model.init == "scratch")


def make_trainer(r: Run):
    """The task's Trainer over the prepared model, with the pipeline's callbacks."""
    cfg = r.cfg
    tracking.setup(cfg, r.run_dir)  # logger=: env for the Trainer's callbacks; MLflow/W&B run with the config
    args = trainer.training_args(cfg, r.task, r.run_dir)
    splits = r.tokenized if r.stream is None else {**r.tokenized, "train": r.stream}
    t = trainer.build_trainer(cfg, r.task, r.model, r.tokenizer, splits, args)
    if cfg.do_eval:  # data.mixture: eval_<source>_<metric> beside the combined eval_<metric>
        t.source_eval = {name: (d["validation"], r.task.split_metrics(r.per_source[name]["validation"],
                                                                       d["validation"], r.tokenizer))
                         for name, d in r.per_source_tokenized.items()}
    scrub.trainer_callbacks(t)  # trackers log TrainingArguments / model config without paths or secrets
    peft_glue.attach(t, r.task)  # PEFT glue: AdaLoRA budget, label padding for virtual tokens
    guards.install(t)  # COMPLETE marker per checkpoint, stop on NaN/inf loss
    cluster.attach(t)  # submitit jobs: preemption signal -> checkpoint at the step's end -> requeue
    console.quiet_trainer(t, cfg)  # quiet=true: no per-step log prints either
    return t


def train_stage(r: Run) -> None:
    """The Trainer (built here unless it already is), then training unless do_train=false."""
    if r.trainer is None:
        r.trainer = make_trainer(r)
    if r.cfg.do_train:
        r.metrics.update(trainer.train(r.trainer, resume_from_checkpoint=r.resume))


def evaluate_stage(r: Run) -> None:
    """Validation and test metrics from real predictions; samples.jsonl."""
    if r.cfg.do_eval:
        r.metrics.update(evaluate.evaluate(r.trainer, r.task, r.tokenizer, r.raw, r.tokenized,
                                           int(r.cfg.num_samples), r.run_dir))
        r.metrics.update(evaluate.per_source(r.trainer, r.task, r.per_source, r.per_source_tokenized))


def rlhf_stage(r: Run) -> None:
    """Optional RLHF after supervised fine-tuning (conf/rlhf/; nothing when ``rlhf`` is null): the fine-tuned model,
    saved to <run>/sft/model, is the policy unless rlhf.policy_path names one."""
    cfg = r.cfg
    if not cfg.get("rlhf"):
        return
    policy_path = str(cfg.rlhf.policy_path) if cfg.rlhf.policy_path else None
    needs_policy = cfg.rlhf.algorithm != "reward" or cfg.rlhf.reward.init == "policy"
    if policy_path is None and needs_policy:
        policy_path = save_model(unwrap(r.trainer), r.tokenizer, Path(r.run_dir) / "sft" / "model")
    r.metrics.update(rlhf.run_steps(cfg, r.run_dir, policy_path, str(cfg.data.source)))


def report_stage(r: Run) -> None:
    """metrics.json with the run's facts, model/ with its card, log_history.json, report.html."""
    m = r.metrics
    m.update(card.run_facts(r.cfg, r.trainer.model, r.task, r.raw, r.tokenized, m, distributed.world_size()))
    if r.stream is not None:  # streamed: the rows trained (run_facts counts the head's tokenised rows)
        a = r.trainer.args
        m["train_samples"] = r.trainer.state.global_step * a.per_device_train_batch_size * \
            a.gradient_accumulation_steps * distributed.world_size()
    m.update(wall_seconds=time.time() - r.t0, best_checkpoint=r.trainer.state.best_model_checkpoint)
    m.update(distributed.run_facts(r.trainer))  # every rank: effective batch, replicas in sync (a collective)
    partial = r.run_dir / ".model.partial"
    r.trainer.save_model(str(partial))  # every rank (FSDP / ZeRO-3 gather weights collectively); rank 0 writes
    if r.trainer.is_world_process_zero():
        (partial / "training_args.bin").unlink(missing_ok=True)  # a pickle; the resolved config is in .hydra/
        peft_glue.save_base(r.trainer.model, partial)  # PEFT: base/config.json (+ scratch base weights)
        command = pages.reproduce_command()  # this job's overrides (a sweep job's own; submitit jobs have no argv)
        (partial / "README.md").write_text(card.model_card(r.cfg, m, command))
        publish_dir(partial, r.run_dir / "model")
        m["model_bytes"] = sum(f.stat().st_size for f in (r.run_dir / "model").rglob("*") if f.is_file())
        write_json_atomic(r.run_dir / "log_history.json", r.trainer.state.log_history)  # loss curves (compare)
        write_json_atomic(r.run_dir / "metrics.json", m)
        pages.write_run_report(r.run_dir, m, r.cfg, command)  # report.html: metrics, loss curves, samples, config


def publish_stage(r: Run) -> None:
    """Main process: final metrics (+ artifacts) into the tracker, then model/ + card to the Hub if hub.push."""
    if distributed.is_main():
        tracking.finish(r.cfg, r.run_dir, r.metrics)
        pushed = hub.push_or_explain(r.cfg, r.run_dir)  # a failed upload leaves the run complete, says how to retry
        if pushed:
            r.metrics.update(pushed)
            write_json_atomic(r.run_dir / "metrics.json", r.metrics)


STAGES = (check_stage, data_stage, model_stage, method_stage, train_stage, evaluate_stage, rlhf_stage, report_stage,
          publish_stage)


def until(r: Run, stage) -> Run:
    """Run the stages before ``stage`` (tests and benchmarks step in between, e.g. to add a Trainer callback)."""
    for s in STAGES[:STAGES.index(stage)]:
        s(r)
    return r


def run(cfg, run_dir: Path, after_check=None) -> dict:
    """All the stages; ``after_check(resolved_cfg)`` runs once the check stage has passed (the app writes the run's
    record into the run directory only then: pipeline/commands/app.py)."""
    reset_peak_memory()  # peak memory per run, also when a sweep runs several in one process
    r = Run(cfg=cfg, run_dir=Path(run_dir))
    for stage in STAGES:
        stage(r)
        if stage is check_stage and after_check is not None:
            after_check(r.cfg)
    return r.metrics
