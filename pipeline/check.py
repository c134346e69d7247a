"""Cross-field checks that run before any heavy work: each failure is one line saying what and how to fix."""

from __future__ import annotations

import os

from pipeline.errors import ConfigError, ModelError
from pipeline.families import check_task, get_family
from pipeline.paths import resolve_pkg_path


def validate(cfg) -> None:
    from pipeline.tasks import task_class

    family = get_family(cfg.model.family)
    check_task(family, task_class(str(cfg.task.name)), cfg.model.name_or_path)
    from pipeline import methods

    methods.validate(cfg, family)  # method x family / trainer combinations that cannot work (methods.REFUSALS)
    _check_model_source(cfg.model)
    _number(cfg, "seed", int, where="")
    _check_trainer(cfg.trainer)
    if cfg.trainer.get("hub_token"):  # .hydra/config.yaml, the model card and checkpoints would keep it
        raise ConfigError("trainer.hub_token is set in the config, where it would be written to the run directory; "
                          "remove it and export HF_TOKEN=... instead")
    if cfg.data.source not in ("auto", "hub", "conll", "json", "csv", "text", "synthetic"):
        raise ConfigError(f"data.source={cfg.data.source}: use auto, hub, conll, json, csv, text or synthetic")
    from pipeline import hub, tracking

    tracking.check(cfg)  # logger=mlflow / wandb: the package is installed
    hub.check(cfg)  # hub.push=true: repo id, HF_TOKEN in the env, the Hub reachable (not HF_HUB_OFFLINE)
    if cfg.get("rlhf"):  # the RLHF stage's own checks (pipeline/rlhf/), before the fine-tuning work
        from pipeline.rlhf import validate as validate_rlhf

        validate_rlhf(cfg)


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.exists(name)


def _check_model_source(mcfg) -> None:
    if mcfg.init == "scratch":
        return
    if mcfg.init != "pretrained":
        raise ConfigError(f"model.init={mcfg.init}: use pretrained or scratch")
    name = resolve_pkg_path(str(mcfg.name_or_path))
    if _looks_local(name):
        if not os.path.isdir(os.path.expanduser(name)):
            raise ModelError(f"model.name_or_path={mcfg.name_or_path}: no such directory; give a folder holding "
                             f"config.json, or a hub id")
        config_file = os.path.join(os.path.expanduser(name), "config.json")
        if not os.path.isfile(config_file):
            raise ModelError(f"model.name_or_path={mcfg.name_or_path}: no config.json in that folder; is it a "
                             f"saved model (the model/ folder of a run)?")
        import json

        from pipeline.families import check_model_type

        with open(config_file) as f:  # a checkpoint of another family is refused before any data work
            check_model_type(get_family(mcfg.family), json.load(f).get("model_type", ""), mcfg.name_or_path)
        _check_safetensors(os.path.expanduser(name), mcfg)
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json", revision=mcfg.revision), str):
            raise ModelError(f"model.name_or_path={name} is a hub id but HF_HUB_OFFLINE=1 and it is not cached; "
                             f"use a local path, model=minilm-offline, or model.init=scratch")


def _check_safetensors(folder: str, mcfg) -> None:
    """Pickled weights (pytorch_model.bin) can run code when loaded: refuse them unless asked for."""
    names = os.listdir(folder)
    if any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names):
        return
    pickles = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    if pickles and not mcfg.get("allow_pickle_weights"):
        raise ModelError(f"model.name_or_path={mcfg.name_or_path}: only pickle weights ({pickles[0]}), which can run "
                         f"code when loaded; convert them to safetensors, or set model.allow_pickle_weights=true if "
                         f"you trust the source")


def _number(node, key: str, kind, where: str = "trainer."):
    """``node[key]`` as int / float, or one line naming the key (a typo like lr=3e-4x would be a ValueError)."""
    try:
        return kind(node[key])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}{key}={node[key]!r} is not {'an integer' if kind is int else 'a number'}; "
                          f"give {where}{key}=<{'integer' if kind is int else 'number'}>") from None


def _check_trainer(t) -> None:
    for key, kind in (("learning_rate", float), ("num_train_epochs", float), ("max_steps", int),
                      ("per_device_train_batch_size", int), ("per_device_eval_batch_size", int),
                      ("gradient_accumulation_steps", int), ("weight_decay", float), ("warmup_steps", float)):
        if key in t:
            _number(t, key, kind)
    lr = float(t.learning_rate)
    if not 0 < lr < 1:
        raise ConfigError(f"trainer.learning_rate={lr} is out of range; use a value in (0, 1), e.g. 5e-5")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if int(t[key]) < 1:
            raise ConfigError(f"trainer.{key}={t[key]} must be >= 1")
    if int(t.max_steps) <= 0 and float(t.num_train_epochs) <= 0:
        raise ConfigError("trainer.num_train_epochs must be > 0 (or set trainer.max_steps > 0)")
    if t.get("group_order", "sorted") not in ("shuffled", "sorted"):
        raise ConfigError(f"trainer.group_order={t.group_order!r}: use shuffled (length-grouped batches in random "
                          "order) or sorted (transformers' long-to-short order within each mega-batch)")


def post_load(cfg, task, model, tokenizer) -> None:
    """Checks that need the loaded model: sequence lengths within the model's position limit."""
    limit = next((getattr(model.config, k) for k in ("max_position_embeddings", "n_positions")
                  if getattr(model.config, k, None)), None)
    if limit is None:
        return
    for key in task.length_keys:
        value = cfg.task.get(key)
        if value is not None and int(value) > int(limit):
            raise ConfigError(f"task.{key}={value} is above the model's maximum of {limit} positions; "
                              f"set task.{key}<={limit}")
