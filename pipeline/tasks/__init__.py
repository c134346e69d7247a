"""Tasks: the main axis of variation. ``get_task(cfg)`` returns the object the stages call; no stage branches on
the task name. Each module defines the Auto model class, preprocessing, collator, metrics and trainer class."""

from __future__ import annotations

import importlib

from pipeline.errors import ConfigError

TASK_MODULES = {"ner": "pipeline.tasks.ner", "generation": "pipeline.tasks.generation",
                "summarization": "pipeline.tasks.summarization"}


def get_task(cfg):
    name = cfg.task.name
    if name not in TASK_MODULES:
        raise ConfigError(f"task={name} is not known; use one of {sorted(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name]).TASK_CLASS(cfg)
