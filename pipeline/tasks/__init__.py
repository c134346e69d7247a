"""Tasks: the main axis of variation. A task is one module here (a ``Task`` subclass named by ``TASK_CLASS``) plus
``conf/task/<name>.yaml``; modules are found by listing this package, so adding a task edits nothing else. Stages
and commands ask the task object (``get_task(cfg)``) and never branch on its name.

Task modules import torch, transformers and trl inside the methods that use them: listing the tasks imports every
task module (``finetune-predict`` of any run, the config checks), and those packages cost seconds to import."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from pipeline.errors import ConfigError

_NOT_TASKS = {"base", "seq2seq"}  # shared code, not tasks


@functools.lru_cache(maxsize=None)
def task_classes() -> dict:
    """{task name: Task subclass} for every task module of this package."""
    out = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_TASKS:
            continue
        cls = getattr(importlib.import_module(f"{__name__}.{info.name}"), "TASK_CLASS", None)
        if cls is not None:
            out[cls.name] = cls
    order = ("encoder", "decoder", "encoder-decoder")
    return dict(sorted(out.items(), key=lambda kv: (order.index(kv[1].archs[0]), kv[0])))


def task_class(name: str):
    classes = task_classes()
    if name not in classes:
        raise ConfigError(f"task={name} is not known; use one of {sorted(classes)}")
    return classes[name]


def get_task(cfg):
    return task_class(str(cfg.task.name))(cfg)


def tasks_for_arch(arch: str) -> list[str]:
    """Names of the tasks a family architecture (encoder | decoder | encoder-decoder) can do."""
    return [name for name, cls in task_classes().items() if arch in cls.archs]
