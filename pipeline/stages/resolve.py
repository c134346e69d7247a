"""The run's config, checked and resolved once before any stage runs: ``finetune`` (the check stage,
pipeline/stages/run.py) and ``finetune-rlhf`` (pipeline/commands/rlhf.py) call ``resolve``; the stages read the
result, which is read-only.

``resolve(cfg, run_dir)`` returns a new config in which
- every value has its type and range (pipeline/config/schema.py + typecheck.py: the pipeline's own keys, the task's ``Config``, the
  fields of TrainingArguments / the PEFT config / TRL configs, generation settings), and the library config objects
  were built once, so their own validation ran;
- derived values are filled in, each in one place: escapes typed on a shell command line (``data.conll.separator='\\t'``
  is a tab), ``~`` in paths, the data source (files named win over a Hub dataset), the family of a model named for a
  from-config build, the batch plan (trainer.global_batch_size over the processes), the effective learning rates
  (x method.lr_scale), ``auto`` speed-ups, quiet mode, tracking settings;
- cross-field checks passed (pipeline/stages/check.py ``validate``).
Each failure is one line (ConfigError: ``error: ...``, exit 2). Checks of the machine (files, models, network, the
launcher) are ``check.environment``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import schema, typecheck
from pipeline.data.readers import infer_source
from pipeline.errors import ConfigError
from pipeline.families import check_model_type, get_family, model_type_of, read_config
from pipeline.infra import distributed
from pipeline.models.methods import method_kind
from pipeline.rlhf.common import trl_configs
from pipeline.stages import check
from pipeline.tasks import get_task, task_class
from pipeline.training.trainer import resolve_auto, training_args
from pipeline.util.text import unescape

log = logging.getLogger("pipeline")

# Values where a user types escapes on a shell command line ('\t'), which Hydra passes on as backslash + letter.
ESCAPED_KEYS = ("data.conll.separator", "rlhf.data.response_marker", "rlhf.data.prompt_template")
PATH_KEYS = ("data.train_file", "data.validation_file", "data.test_file", "model.name_or_path", "resume",
             "rlhf.policy_path", "rlhf.reward_path", "rlhf.reward.name_or_path", "rlhf.data.train_file",
             "rlhf.data.test_file")
MARK = "_resolved_"  # set on a resolved config: resolving again returns it unchanged (nothing applies twice)


def _get(cfg, dotted: str):
    return OmegaConf.select(cfg, dotted, default=None)


def _set(cfg, dotted: str, value) -> None:
    OmegaConf.update(cfg, dotted, value, merge=False)


def resolve(cfg, run_dir: str | os.PathLike | None = None, stage: str = "finetune"):
    """The checked, derived, read-only config (see the module docstring). ``stage``: ``finetune`` (fine-tuning,
    then the RLHF stage if set) or ``rlhf`` (finetune-rlhf: the RLHF stage alone)."""
    if cfg.get(MARK):
        return cfg
    _typed(OmegaConf.to_container(cfg, resolve=False))  # the keys as typed, before interpolation
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: {' '.join(str(e).split())[:300]}") from None
    _typed(plain)
    out = OmegaConf.create(plain)
    _strings(out)
    _data_source(out)
    _model_family(out)
    _trainer(out)
    _learning_rates(out)
    _tracking(out, run_dir)
    check.validate(out)  # cross-field: task x family, method refusals (+ the PEFT config built), trainer ranges
    _library_configs(out, run_dir, stage)
    out[MARK] = True
    OmegaConf.set_struct(out, True)
    OmegaConf.set_readonly(out, True)
    return out


def _strings(cfg) -> None:
    for key in ESCAPED_KEYS:
        value = _get(cfg, key)
        if isinstance(value, str) and "\\" in value:
            _set(cfg, key, unescape(value))
    for key in PATH_KEYS:
        value = _get(cfg, key)
        if isinstance(value, str) and value.startswith("~"):
            _set(cfg, key, os.path.expanduser(value))


def _typed(d: dict) -> None:
    """Types, ranges and choices of the pipeline's own keys (pipeline/schema.py) and of the task's config, on the plain
    config ``d``; typed values are written back ('3' -> 3)."""
    groups = [(schema.Root, None), (schema.Model, "model"), (schema.Data, "data"), (schema.TrainerKeys, "trainer"),
              (schema.MethodKeys, "method"), (schema.Logger, "logger")]
    if isinstance(d.get("rlhf"), dict):
        groups.append((schema.Rlhf, "rlhf"))
    for cls, group in groups:
        node = d if group is None else d.get(group)
        if isinstance(node, dict):
            _merge(node, typecheck.check(cls, node, f"{group}." if group else ""))
    task = d.get("task")
    if not isinstance(task, dict) or not task.get("name"):
        raise ConfigError("task: no task.name in the config; pick one with task=<name>")
    tcls = task_class(str(task["name"]))
    typed = typecheck.check(tcls.Config, task, "task.")
    _merge(task, typed)
    ranged = {f.name for f in dataclasses.fields(tcls.Config) if f.metadata}
    for key, value in typed.items():  # a task's sizes (lengths, block size, windows) are positive integers
        if isinstance(value, int) and not isinstance(value, bool) and value < 1 and key not in ranged:
            raise ConfigError(f"task.{key}={value} is out of range: it must be >= 1")
    scratch = (d.get("model") or {}).get("scratch") or {}
    h, n = scratch.get("hidden_size"), scratch.get("num_heads")
    if isinstance(h, int) and isinstance(n, int) and h % n:
        raise ConfigError(f"model.scratch.hidden_size={h} is not a multiple of model.scratch.num_heads={n}; "
                          f"use e.g. hidden_size={n * max(1, round(h / n))}")


def _merge(node: dict, typed: dict) -> None:
    for k, v in typed.items():
        if isinstance(v, dict) and isinstance(node.get(k), dict):
            _merge(node[k], v)
        else:
            node[k] = v


def _data_source(cfg) -> None:
    """data.source=auto -> the source used; local files named win over a Hub dataset (data.path) and generated data
    (data/readers.py ``infer_source``)."""
    cfg.data.source = infer_source(cfg.data, task_class(str(cfg.task.name)))  # the data stage logs it


def _model_family(cfg) -> None:
    """model.family := the model type the run builds, read from the checkpoint's config before any weights.

    init=pretrained: the checkpoint's config.model_type (a folder, a cached hub id, or the Hub's config.json when
    online); an explicit model.family must agree with it. init=scratch: a named model at hand gives its type (a tiny
    one of it, with its tokenizer), else model.family (an explicit choice), else model.scratch.model_type (what the
    model file builds), else bert. A hub id not at hand offline keeps the model file's type for the config checks;
    check.environment refuses loading it."""
    m = cfg.model
    config = read_config(m, download=m.init == "pretrained") if m.get("name_or_path") else None
    if config is not None and m.init == "pretrained":
        check_model_type(m.get("family"), config.model_type, m.name_or_path)
    model_type = model_type_of(m, config.model_type if config is not None else None)
    if config is not None and m.init == "scratch":
        log.info("model: %s is a %s model: the from-config model is a tiny %s", m.name_or_path, model_type,
                 model_type)
    get_family(model_type)  # a type transformers knows (one line otherwise)
    m.family = model_type
    if m.get("scratch") is not None:
        m.scratch.model_type = model_type


def _trainer(cfg) -> None:
    """Batch plan, quiet mode, auto speed-ups, then every TrainingArguments field's type and range."""
    args_class = get_task(cfg).trainer_classes()[1]
    typecheck.library_fields(OmegaConf.to_container(cfg.trainer), args_class, "trainer.", allow_auto=True)
    distributed.configure(cfg)  # batch plan from trainer.global_batch_size; launcher settings agree with cfg.trainer
    if cfg.get("quiet") or os.environ.get("FINETUNE_QUIET") == "1":
        cfg.trainer.disable_tqdm = True
    fields = OmegaConf.to_container(cfg.trainer)
    resolve_auto(fields)
    OmegaConf.update(cfg, "trainer", fields, merge=False)
    typecheck.library_fields(fields, args_class, "trainer.")
    if cfg.get("rlhf"):
        for key in ("trainer", "reward.trainer"):
            block = OmegaConf.select(cfg.rlhf, key)
            if block is not None:
                typecheck.library_fields(OmegaConf.to_container(block), args_class, f"rlhf.{key}.")


def uses_peft_lr(cfg) -> bool:
    return method_kind(cfg.method) == "peft"


def _learning_rates(cfg) -> None:
    """Effective learning rates: trainer.learning_rate x method.lr_scale, and (RLHF with a LoRA method) the RLHF
    steps' rates x lr_scale too. Applied here only, on the config of this run: the same numbers for ``finetune`` and
    ``finetune-rlhf``."""
    scale = float(cfg.method.get("lr_scale") or 1.0)
    if scale == 1.0:
        return
    lr = float(cfg.trainer.learning_rate)
    cfg.trainer.learning_rate = lr * scale
    log.info("learning rate: trainer.learning_rate %g x method.lr_scale %g (method=%s) = %g", lr, scale,
             cfg.method.name, lr * scale)
    if cfg.get("rlhf") and uses_peft_lr(cfg):
        for block in (cfg.rlhf.get("trainer"), cfg.rlhf.reward.get("trainer")):
            if block is not None and block.get("learning_rate") is not None:
                block.learning_rate = float(block.learning_rate) * scale


def _tracking(cfg, run_dir) -> None:
    """report_to in one spelling ("none" or a list); the tracker's store and folders follow from logger.* and the
    run directory in pipeline/tracking.py ``setup``."""
    report_to = cfg.trainer.get("report_to")
    if report_to in ("none", None, [], ["none"]):
        cfg.trainer.report_to = "none"
    elif isinstance(report_to, str):
        cfg.trainer.report_to = [report_to]


def _library_configs(cfg, run_dir, stage: str) -> None:
    """Build the library config objects once, before any data or model work: their own validation runs now."""
    task = get_task(cfg)
    where = Path(run_dir) if run_dir is not None else Path("outputs") / "resolve-check"
    if stage == "finetune":
        typecheck.generation(task.generation_settings(), "task.generation.")  # also read by training_args
        training_args(cfg, task, where)
    if cfg.get("rlhf"):
        trl_configs(cfg, where)
