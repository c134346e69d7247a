"""The check stage's checks, before any heavy work: each failure is one line saying what and how to fix.

``validate(cfg)``: the config alone (cross-field; pipeline/stages/resolve.py calls it once per run);
``environment(cfg)``: the machine (model reachable, tracker installed, Hub reachable for a push, RLHF folders);
``earlier_run(cfg, run_dir)``: what the run directory already holds (a finished run, a run of another task to resume);
``post_load``: what needs the loaded model (lengths within its positions).
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from omegaconf import OmegaConf

from pipeline import rlhf
from pipeline.data import mixture
from pipeline.errors import ConfigError, ModelError
from pipeline.families import MODELS_BY_ARCH, auto_maps, model_family
from pipeline.integrations import hub, tracking
from pipeline.models import methods
from pipeline.tasks import task_class, tasks_for_arch
from pipeline.util.paths import resolve_pkg_path
from pipeline.util.text import SECRET_KEY

ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flash_attention_4", "flex_attention",
             "paged|eager", "paged|sdpa", "paged|flash_attention_2")  # transformers 5 attn_implementation names


def validate(cfg) -> None:
    """Cross-field checks of the config alone (pipeline/stages/resolve.py calls this; no files, no network)."""
    family = model_family(cfg.model)
    check_task(family, task_class(str(cfg.task.name)), cfg.model.name_or_path or f"a tiny {family.name}")
    methods.validate(cfg, family)  # method x family / trainer combinations that cannot work (methods.REFUSALS)
    _check_trainer(cfg.trainer)
    attn = cfg.model.get("attn_implementation")
    if attn and attn not in ATTENTION and "/" not in str(attn):  # "<org>/<repo>": a kernel from the Hub
        raise ConfigError(f"model.attn_implementation={attn!r}: use one of {', '.join(ATTENTION)}, null (the "
                          f"model's default), or a Hub kernel repo id")
    if cfg.model.init == "pretrained" and not cfg.model.get("name_or_path"):
        raise ConfigError("model.init=pretrained needs model.name_or_path=<hub id, local folder or pkg://...>")
    secret = next((k for k, v in (cfg.trainer or {}).items() if SECRET_KEY.search(str(k)) and v), None)
    if secret:  # .hydra/config.yaml, the model card and checkpoints would keep it
        raise ConfigError(f"trainer.{secret} is set in the config, where it would be written to the run directory; "
                          f"remove it and export HF_TOKEN=... instead")
    if cfg.get("rlhf"):  # the RLHF stage's own checks of its config (pipeline/rlhf/checks.py)
        rlhf.validate(cfg)
    if cfg.data.get("streaming") and int(cfg.trainer.get("max_steps", -1)) <= 0:
        raise ConfigError("data.streaming=true reads a stream of unknown length: set trainer.max_steps=<steps> "
                          "(epochs cannot be counted)")
    if cfg.data.get("mixture"):  # its entries, names and weights, before any file is read
        names = [e["name"] for e in mixture.entries(cfg.data)]
        best = cfg.data.get("mixture_best")
        if best and best not in names:
            raise ConfigError(f"data.mixture_best={best} is not a source of data.mixture ({', '.join(names)}); "
                              f"name one, or null for the combined metric")


def can_do(family, task) -> bool:
    """The model type's kind is one the task takes, and the task's Auto class has a class for the type."""
    return family.arch in task.archs and auto_maps(task.auto_class, family.name)


def check_task(family, task, model_name: str) -> None:
    """A task the model type cannot do is refused before any data or weights are touched, naming those it can."""
    if not can_do(family, task):
        advice = " or ".join(MODELS_BY_ARCH[a] for a in task.archs)
        able = [n for n in tasks_for_arch(family.arch) if can_do(family, task_class(n))]
        instead = f", or task={'|'.join(able)} with this model" if able else ""
        why = "" if family.arch in task.archs else f", {family.arch}"
        lacks = f"; transformers has no {task.auto_class} class for it" if family.arch in task.archs else ""
        raise ModelError(f"model {model_name} ({family.name}{why}) cannot do task={task.name}{lacks}; use "
                         f"{advice}{instead}")


def environment(cfg) -> None:
    """Checks of the machine before any heavy work: the model can be loaded from here, the tracker is installed, the
    Hub is reachable for a push, the RLHF stage's model folders exist."""
    _check_model_source(cfg.model)
    tracking.check(cfg)  # logger=mlflow / wandb: the package is installed
    hub.check(cfg)  # hub.push=true: repo id, HF_TOKEN in the env, the Hub reachable, the repo's visibility
    if cfg.get("rlhf"):  # the model folders the RLHF stage starts from
        rlhf.check_paths(cfg)


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.exists(name)


def _check_model_source(mcfg) -> None:
    if mcfg.init == "scratch" or not mcfg.get("name_or_path"):
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
        _check_safetensors(os.path.expanduser(name), mcfg)
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1":
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


def _check_trainer(t) -> None:
    """Cross-field checks of the trainer group (types and ranges of each field: pipeline/schema.py)."""
    if int(t.max_steps) <= 0 and float(t.num_train_epochs) <= 0:
        raise ConfigError("trainer.num_train_epochs must be > 0 (or set trainer.max_steps > 0)")


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


NO_RESUME = (None, False, "", "none", "null")


def _identity(cfg) -> dict:
    """What a run is a run of: the facts a resumed run must share with the one it continues."""
    name = cfg.get("model", {}).get("name_or_path")
    return {"task": cfg.get("task", {}).get("name"), "model": os.path.expanduser(str(name)) if name else None,
            "model.init": cfg.get("model", {}).get("init"), "method": cfg.get("method", {}).get("name")}


def _describe(facts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in facts.items() if v is not None)


def earlier_run(cfg, run_dir, finished=("model",)) -> None:
    """Checks of the run directory before anything is written into it. A directory holding an earlier run (its
    .hydra/config.yaml): resuming it needs the same task, model and method; a fresh run is refused where that run
    finished (``finished``: what it leaves, e.g. model/), whose results it would replace. Checkpoints of an earlier
    run refuse a fresh one too (pipeline/infra/resume.py)."""
    saved = Path(run_dir) / ".hydra" / "config.yaml"
    if not saved.is_file():
        return
    try:
        node = OmegaConf.load(saved)
        try:
            earlier = OmegaConf.to_container(node, resolve=True)
        except Exception:  # an interpolation that needs Hydra's context: the values as written
            earlier = OmegaConf.to_container(node, resolve=False)
    except Exception:  # an unreadable config.yaml: the checkpoint rules alone decide
        return
    before, now = _identity(earlier), _identity(cfg)
    if cfg.get("resume") not in NO_RESUME:
        differ = [k for k in now if before[k] != now[k]]
        if differ:
            raise ConfigError(f"resume={cfg.resume}: {run_dir} holds a run of {_describe(before)}, which "
                              f"{', '.join(differ)} of this one ({_describe({k: now[k] for k in differ})}) does not "
                              f"match; resume it with its own settings, or start this run in another hydra.run.dir")
        return
    done = [f for f in finished if (Path(run_dir) / f).exists()]
    if done:
        raise ConfigError(f"{run_dir} holds a finished run ({_describe(before)}); give this one another "
                          f"hydra.run.dir (a sweep: hydra.sweep.dir; or output_root=...), or continue that run with "
                          f"resume=auto")
