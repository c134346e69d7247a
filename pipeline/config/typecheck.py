"""Checks that turn a wrong config value into one line (``ConfigError``: ``error: <key>=<value> ...``, exit 2).

- the pipeline's own keys: the dataclasses of pipeline/config/schema.py (and each task's ``Config``), merged with OmegaConf's
  structured configs for the types, then the ranges and choices in each field's ``metadata`` (``check``);
- keys a library config class takes (``trainer.*`` -> TrainingArguments, ``method.*`` -> the PEFT config,
  ``rlhf.trainer.*`` -> a TRL config): checked against that class's own field types and ``LIBRARY_RANGES``
  (``library_fields``); pipeline/stages/resolve.py then builds the class, so its own validation runs too;
- generation settings: their types and ranges (``GENERATION``), then ``GenerationConfig.validate(strict=True)``.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, Dict, List

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config.schema import FRACTION, SIZE, at_least
from pipeline.errors import ConfigError

# -- checking a plain dict against a schema ------------------------------------------------------------------------
def _placeholder(hint) -> str:
    kind = _kind(hint)
    return {"an integer": "<integer>", "a number": "<number>", "true or false": "<true|false>",
            "a string": "<text>", "a list": "[<item>,<item>]", "a mapping (key: value)": "{<key>:<value>}"}.get(
        kind, "<value>")


def _kind(hint) -> str:
    """What to ask for in the message: 'an integer', 'a number', 'true or false', ..."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             dict: "a mapping (key: value)", list: "a list"}
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    origin = typing.get_origin(args[0]) or args[0]
    return names.get(origin, getattr(origin, "__name__", str(origin)))


def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a forward reference the library does not export: its fields are left to the library
        return {}


def _subset(cls, values: dict) -> dict:
    """``values`` restricted to ``cls``'s fields (nested dataclasses too): other keys are not this schema's.
    Interpolations (``${...}``, in a config not yet resolved) are left out: their targets are checked."""
    hints, out = _hints(cls), {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            if isinstance(v, str) and "${" in v:
                continue
            out[f.name] = _subset(hints[f.name], v) if dataclasses.is_dataclass(hints.get(f.name)) and \
                isinstance(v, dict) else v
    return out


def _value_line(key: str, value, metadata: dict) -> str | None:
    """Why ``value`` breaks the range / choices of ``metadata`` (None: it does not)."""
    if value is None:
        return None
    if "choices" in metadata and value not in metadata["choices"]:
        shown = ", ".join("null" if c is None else str(c) for c in metadata["choices"])
        return f"{key}={value!r}: use one of {shown}"
    for op, ok, word in (("min", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                         ("lt", lambda v, b: v < b, "<"), ("max", lambda v, b: v <= b, "<=")):
        if op in metadata and isinstance(value, (int, float)) and not ok(value, metadata[op]):
            hint = f", e.g. {key}={metadata['hint']}" if "hint" in metadata else ""
            return f"{key}={value} is out of range: it must be {word} {metadata[op]}{hint}"
    return None


def _ranges(cls, values: dict, prefix: str) -> None:
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        if dataclasses.is_dataclass(hints.get(f.name)) and isinstance(values[f.name], dict):
            _ranges(hints[f.name], values[f.name], f"{prefix}{f.name}.")
        else:
            why = _value_line(f"{prefix}{f.name}", values[f.name], dict(f.metadata))
            if why:
                raise ConfigError(why)


def check(cls, values: dict, prefix: str) -> dict:
    """Types (OmegaConf structured merge: '3' -> 3, 'abc' for an int -> error), then ranges and choices of the keys
    of ``values`` that ``cls`` names. Returns those keys with their typed values (to write back)."""
    sub = _subset(cls, values)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), sub)
    except OmegaConfBaseException as e:
        key = f"{prefix}{e.full_key}" if getattr(e, "full_key", None) else prefix.rstrip(".")
        hint = _nested_hint(cls, str(getattr(e, "full_key", "") or ""))
        value = getattr(e, "value", None)
        raise ConfigError(f"{key}={value!r} is not {_kind(hint)}; give {key}={_placeholder(hint)}") from None
    typed = OmegaConf.to_container(merged)
    typed = _pick(typed, sub)
    _ranges(cls, typed, prefix)
    return typed


def _pick(typed: dict, like: dict) -> dict:
    return {k: _pick(typed[k], v) if isinstance(v, dict) and isinstance(typed.get(k), dict) and v else typed[k]
            for k, v in like.items()}


def _nested_hint(cls, dotted: str):
    hint = cls
    for part in dotted.split(".") if dotted else []:
        hints = _hints(hint) if dataclasses.is_dataclass(hint) else {}
        if part not in hints:
            return hint
        hint = hints[part]
    return hint


# -- keys that a library config class takes ------------------------------------------------------------------------
def _accepts(value, hint) -> bool:
    """Lenient type test of a plain config value against a library field's annotation; unknown shapes pass (the
    class's own validation sees them)."""
    if hint is Any or hint is None:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, str) and (value in [m.value for m in hint] or value in hint.__members__)
    if (origin or hint) in (list, tuple, List, typing.Sequence):
        return isinstance(value, (list, tuple))
    if (origin or hint) in (dict, Dict, typing.Mapping):
        return isinstance(value, dict)
    return True


# Ranges of library fields the classes do not check themselves (checked here by field name).
LIBRARY_RANGES = {
    "learning_rate": {"gt": 0.0, "lt": 1.0, "hint": "5e-5"}, "num_train_epochs": {"min": 0.0},
    "max_steps": {"min": -1, "hint": "-1 (train trainer.num_train_epochs) or a step count"}, "weight_decay": {"min": 0.0},
    "warmup_steps": {"min": 0.0}, "max_grad_norm": {"min": 0.0}, "logging_steps": {"gt": 0.0},
    "eval_steps": {"gt": 0.0}, "save_steps": {"gt": 0.0}, "save_total_limit": SIZE,
    "per_device_train_batch_size": SIZE, "per_device_eval_batch_size": SIZE, "gradient_accumulation_steps": SIZE,
    "dataloader_num_workers": at_least(0), "eval_accumulation_steps": SIZE,
    # PEFT
    "r": SIZE, "init_r": SIZE, "target_r": SIZE, "lora_alpha": {"gt": 0}, "lora_dropout": FRACTION,
    "module_dropout": FRACTION, "rank_dropout": FRACTION, "num_virtual_tokens": SIZE, "encoder_hidden_size": SIZE,
    "vera_dropout": FRACTION, "boft_dropout": FRACTION, "block_size": SIZE, "boft_block_size": at_least(0),
    "alpha": {"gt": 0}, "OFTConfig.r": at_least(0), "BOFTConfig.boft_n_butterfly_factor": SIZE,
}  # "<ConfigClass>.<field>" overrides "<field>" (OFT's r=0: derived from oft_block_size)


def library_fields(values: dict, config_class, prefix: str, allow_auto: bool = False) -> None:
    """Each key of ``values`` that is a field of the dataclass ``config_class``: of the field's type, in range."""
    hints = _hints(config_class)
    names = {f.name for f in dataclasses.fields(config_class)} if dataclasses.is_dataclass(config_class) else set()
    for key, value in values.items():
        if key not in names or key not in hints or (allow_auto and value == "auto"):
            continue
        if not _accepts(value, hints[key]):
            enum_type = next((a for a in (hints[key], *typing.get_args(hints[key]))
                              if isinstance(a, type) and issubclass(a, enum.Enum)), None)
            if enum_type is not None:
                raise ConfigError(f"{prefix}{key}={value!r}: use one of {[m.value for m in enum_type]}")
            raise ConfigError(f"{prefix}{key}={value!r} is not {_kind(hints[key])}; give "
                              f"{prefix}{key}={_placeholder(hints[key])}")
        rng = LIBRARY_RANGES.get(f"{config_class.__name__}.{key}", LIBRARY_RANGES.get(key, {}))
        why = _value_line(f"{prefix}{key}", value, rng)
        if why:
            raise ConfigError(why)


# -- generation settings -------------------------------------------------------------------------------------------
GENERATION = {"max_new_tokens": (int, SIZE), "min_new_tokens": (int, at_least(0)), "num_beams": (int, SIZE),
              "do_sample": (bool, {}), "temperature": (float, {"gt": 0.0}), "top_p": (float, {"gt": 0.0, "max": 1.0}),
              "top_k": (int, at_least(0)), "repetition_penalty": (float, {"gt": 0.0}),
              "length_penalty": (float, {}), "no_repeat_ngram_size": (int, at_least(0)),
              "num_return_sequences": (int, SIZE), "early_stopping": (bool, {})}


def generation(gen: dict, prefix: str) -> None:
    """A ``generation`` block (task or command line): known keys, their types and ranges, then transformers' own
    ``GenerationConfig.validate(strict=True)`` for combinations."""
    for key, value in gen.items():
        if key not in GENERATION:
            raise ConfigError(f"{prefix}{key}: not a generation setting here; use some of {sorted(GENERATION)}")
        kind, rng = GENERATION[key]
        if value is not None and not _accepts(value, kind):
            raise ConfigError(f"{prefix}{key}={value!r} is not {_kind(kind)}; give {prefix}{key}={_placeholder(kind)}")
        why = _value_line(f"{prefix}{key}", value, rng)
        if why:
            raise ConfigError(why)
    from transformers import GenerationConfig  # seconds to import: finetune-predict's argument checks use this module

    try:
        GenerationConfig(**{k: v for k, v in gen.items() if v is not None}).validate(strict=True)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{prefix.rstrip('.')}: {' '.join(str(e).split())[:300]}") from None
