"""Typed schema of the pipeline's own config keys, and the checks that turn a wrong value into one line.

Three kinds of keys, three checks, each failure a ``ConfigError`` (``error: <key>=<value> ...``, exit 2):

- the pipeline's own keys: the dataclasses below (and each task's ``Config``, pipeline/tasks/), merged with OmegaConf's
  structured configs for the types, then the ranges and choices in each field's ``metadata``;
- keys a library config class takes (``trainer.*`` -> TrainingArguments, ``method.*`` -> the PEFT config,
  ``rlhf.trainer.*`` -> a TRL config): checked against that class's own field types (``library_fields``), then the
  class is built, so its own validation runs (pipeline/config.py);
- generation settings: their types and ranges (``GENERATION``), then ``GenerationConfig.validate(strict=True)``.

Keys a group holds that no schema names (e.g. ``data.dir``, used by interpolation) pass through unchecked.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from pipeline.errors import ConfigError


def at_least(n, **more) -> dict:
    return {"min": n, **more}


def one_of(*choices) -> dict:
    return {"choices": choices}


SIZE = at_least(1)
FRACTION = {"min": 0.0, "lt": 1.0}
PERCENT = {"gt": 0.0, "lt": 100.0}


# -- the pipeline's own keys ---------------------------------------------------------------------------------------
@dataclass
class Hub:
    push: bool = False
    repo_id: Optional[str] = None
    private: bool = True


@dataclass
class Root:
    name: str = "run"
    output_root: str = "outputs"
    seed: int = field(default=0, metadata=at_least(0))
    do_train: bool = True
    do_eval: bool = True
    num_samples: int = field(default=8, metadata=at_least(0))
    resume: Any = None
    debug_errors: bool = False
    quiet: bool = False
    hub: Hub = field(default_factory=Hub)


@dataclass
class Scratch:
    vocab_size: int = field(default=1000, metadata=at_least(16))
    hidden_size: int = field(default=32, metadata=SIZE)
    num_layers: int = field(default=2, metadata=SIZE)
    num_heads: int = field(default=2, metadata=SIZE)
    intermediate_size: int = field(default=64, metadata=SIZE)
    max_positions: Optional[int] = field(default=512, metadata=at_least(8))
    dropout: Optional[float] = field(default=None, metadata=FRACTION)


@dataclass
class Model:
    name_or_path: Optional[str] = None
    family: str = "bert"
    init: str = field(default="pretrained", metadata=one_of("pretrained", "scratch"))
    revision: Optional[str] = None
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    dtype: Optional[str] = field(default=None, metadata=one_of(None, "auto", "float32", "bfloat16", "float16"))
    attn_implementation: Optional[str] = None
    scratch: Scratch = field(default_factory=Scratch)


@dataclass
class Conll:
    token_column: int = 0
    tag_column: int = -1
    separator: Optional[str] = None


@dataclass
class Text:
    sample_by: str = field(default="paragraph", metadata=one_of("line", "paragraph", "document"))


@dataclass
class Synthetic:
    num_train: int = field(default=2000, metadata=at_least(3))
    num_validation: int = field(default=300, metadata=SIZE)
    num_test: int = field(default=300, metadata=SIZE)


SOURCES = ("auto", "hub", "conll", "json", "csv", "text", "synthetic")


@dataclass
class Data:
    source: str = field(default="auto", metadata=one_of(*SOURCES))
    path: Optional[str] = None
    config_name: Optional[str] = None
    revision: Optional[str] = None
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    test_file: Optional[str] = None
    columns: Dict[str, str] = field(default_factory=dict)
    conll: Conll = field(default_factory=Conll)
    text: Text = field(default_factory=Text)
    validation_split_percentage: float = field(default=10, metadata=PERCENT)
    test_split_percentage: float = field(default=10, metadata=PERCENT)
    max_train_samples: Optional[int] = field(default=None, metadata=SIZE)
    max_eval_samples: Optional[int] = field(default=None, metadata=SIZE)
    max_test_samples: Optional[int] = field(default=None, metadata=SIZE)
    num_proc: Optional[int] = field(default=None, metadata=SIZE)
    synthetic: Synthetic = field(default_factory=Synthetic)


@dataclass
class TrainerKeys:
    """The trainer group's pipeline keys; every other key is a TrainingArguments field (``library_fields``)."""
    global_batch_size: Optional[int] = field(default=None, metadata=SIZE)
    group_order: str = field(default="shuffled", metadata=one_of("shuffled", "sorted"))
    early_stopping_patience: Optional[int] = field(default=None, metadata=SIZE)
    early_stopping_threshold: float = field(default=0.0, metadata=at_least(0.0))


@dataclass
class MethodKeys:
    """The method group's pipeline keys (methods.PIPELINE_KEYS); the others are PEFT config fields."""
    name: str = "full"
    kind: Optional[str] = field(default=None, metadata=one_of(None, "full", "freeze", "peft"))
    peft_type: Optional[str] = None
    targets: Any = None
    lr_scale: float = field(default=1.0, metadata={"gt": 0.0})
    train_last_layers: int = field(default=0, metadata=at_least(0))
    load_in_4bit: bool = False


@dataclass
class Logger:
    name: str = field(default="none", metadata=one_of("none", "tensorboard", "mlflow", "wandb"))
    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None
    log_artifacts: bool = True
    project: Optional[str] = None
    mode: str = field(default="offline", metadata=one_of("offline", "online", "disabled"))


@dataclass
class PreferenceSynthetic:
    num_train: int = field(default=256, metadata=at_least(2))
    num_test: int = field(default=32, metadata=SIZE)


@dataclass
class PreferenceData:
    source: str = field(default="auto", metadata=one_of("auto", "json", "csv", "hub", "synthetic"))
    path: Optional[str] = None
    config_name: Optional[str] = None
    data_dir: Optional[str] = None
    revision: Optional[str] = None
    train_file: Optional[str] = None
    test_file: Optional[str] = None
    test_split_percentage: float = field(default=10, metadata=PERCENT)
    columns: Dict[str, str] = field(default_factory=dict)
    response_marker: str = ""
    prompt_template: str = "{prompt}"
    max_train_samples: Optional[int] = field(default=None, metadata=SIZE)
    max_eval_samples: Optional[int] = field(default=None, metadata=SIZE)
    synthetic: PreferenceSynthetic = field(default_factory=PreferenceSynthetic)


@dataclass
class Reward:
    init: str = field(default="policy", metadata=one_of("policy", "pretrained", "scratch"))
    name_or_path: Optional[str] = None
    family: str = "gpt2"
    trainer: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RlhfEval:
    num_prompts: int = field(default=64, metadata=SIZE)
    max_new_tokens: int = field(default=32, metadata=SIZE)
    batch_size: int = field(default=16, metadata=SIZE)


@dataclass
class RlhfGeneration:
    num_generations: int = field(default=4, metadata=at_least(2))
    max_completion_length: int = field(default=32, metadata=SIZE)
    temperature: float = field(default=1.0, metadata={"gt": 0.0})


@dataclass
class Rlhf:
    algorithm: str = field(default="grpo", metadata=one_of("reward", "grpo", "rloo", "dpo", "kto", "orpo"))
    policy_path: Optional[str] = None
    reward_path: Optional[str] = None
    beta: float = field(default=0.05, metadata={"gt": 0.0})
    data: PreferenceData = field(default_factory=PreferenceData)
    max_length: int = field(default=256, metadata=at_least(2))
    max_prompt_length: int = field(default=128, metadata=SIZE)
    reward: Reward = field(default_factory=Reward)
    trainer: Dict[str, Any] = field(default_factory=dict)
    eval: RlhfEval = field(default_factory=RlhfEval)
    generation: RlhfGeneration = field(default_factory=RlhfGeneration)


# -- checking a plain dict against a schema ------------------------------------------------------------------------
def _placeholder(hint) -> str:
    kind = _kind(hint)
    return {"an integer": "<integer>", "a number": "<number>", "true or false": "<true|false>",
            "a string": "<text>"}.get(kind, "<value>")


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
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

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
        return value in [m.value for m in hint] or value in hint.__members__
    if (origin or hint) in (list, tuple, List, typing.Sequence):
        return isinstance(value, (list, tuple))
    if (origin or hint) in (dict, Dict, typing.Mapping):
        return isinstance(value, dict)
    return True


# Ranges of library fields the classes do not check themselves (checked here by field name).
LIBRARY_RANGES = {
    "learning_rate": {"gt": 0.0, "lt": 1.0, "hint": "5e-5"}, "num_train_epochs": {"min": 0.0}, "weight_decay": {"min": 0.0},
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
    from transformers import GenerationConfig

    try:
        GenerationConfig(**{k: v for k, v in gen.items() if v is not None}).validate(strict=True)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{prefix.rstrip('.')}: {' '.join(str(e).split())[:300]}") from None
