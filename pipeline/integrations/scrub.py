"""What leaves the machine holds no local paths and no secrets: the model card (pushed to the Hub) and the tracker's
parameters (MLflow / W&B / TensorBoard, often a shared server). Absolute paths become ``<local>/<name>``; values of
keys named like tokens, passwords or secrets become ``<redacted>``."""

from __future__ import annotations

import json
import os
import re

from pipeline.util.text import is_secret_key

REDACTED = "<redacted>"
_URI_PATH = re.compile(r"\b(sqlite|file):/*(/[^\s'\",;)\]]+)")
_ABS_PATH = re.compile(r"(?<![\w.~:/<>-])(~?/[^\s'\",;)\]]+)")
_SECRET_ASSIGN = re.compile(r"([\w.+-]*?(?:token|password|passwd|secret|api_?key|credentials?)[\w.-]*)=(\S+)", re.I)


def _local(path: str) -> str:
    return f"<local>/{os.path.basename(path.rstrip('/')) or ''}"


def text(value: str) -> str:
    """``value`` with absolute paths (also inside sqlite:/file: URIs) and ``key=secret`` assignments replaced."""
    value = _URI_PATH.sub(lambda m: f"{m.group(1)}:///{_local(m.group(2))}", value)
    value = _ABS_PATH.sub(lambda m: _local(m.group(1)), value)
    return _SECRET_ASSIGN.sub(lambda m: f"{m.group(1)}={REDACTED}", value)


def value(key: str, v):
    """One parameter: redacted when its key names a secret, paths replaced in strings, nested values walked."""
    if is_secret_key(key) and v not in (None, "", False):
        return REDACTED
    if isinstance(v, str):
        return text(v)
    if isinstance(v, dict):
        return params(v)
    if isinstance(v, (list, tuple)):
        return [value(key, x) for x in v]
    return v


def params(d: dict) -> dict:
    return {k: value(k, v) for k, v in d.items()}


class _Proxy:
    """An object whose ``to_dict`` / ``to_json_string`` / ``to_sanitized_dict`` give scrubbed values; every other
    attribute is the wrapped object's."""

    def __init__(self, obj):
        object.__setattr__(self, "_obj", obj)

    def __getattr__(self, name):
        return getattr(self._obj, name)

    def to_dict(self):
        return params(self._obj.to_dict())

    def to_sanitized_dict(self):
        return params(self._obj.to_sanitized_dict())

    def to_json_string(self, *a, **kw):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str) + "\n"


class _ModelProxy(_Proxy):
    @property
    def config(self):
        config = getattr(self._obj, "config", None)
        return None if config is None else _Proxy(config)


TRACKER_CALLBACKS = ("MLflowCallback", "WandbCallback", "TensorBoardCallback")


def trainer_callbacks(trainer) -> None:
    """The Trainer's tracking callbacks log TrainingArguments (output_dir, ...) and the model config (_name_or_path)
    at train begin: hand them scrubbed views of both."""
    for cb in trainer.callback_handler.callbacks:
        if type(cb).__name__ not in TRACKER_CALLBACKS:
            continue
        begin = cb.on_train_begin

        def on_train_begin(args, state, control, _begin=begin, **kwargs):
            if kwargs.get("model") is not None:
                kwargs["model"] = _ModelProxy(kwargs["model"])
            return _begin(_Proxy(args), state, control, **kwargs)

        cb.on_train_begin = on_train_begin
