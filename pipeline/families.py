"""What a model type is and what it takes, from the checkpoint and the libraries; hand-written only where no library
says it (``HAND_WRITTEN``, each row with its reason).

``Family`` holds the facts of one ``config.model_type``: its kind (encoder | decoder | encoder-decoder, from
transformers' Auto mappings), the config class, PEFT targets (peft's per-model mappings), FSDP wrap classes (the model
class's ``_no_split_modules``), the generic scratch sizes mapped to the config's field names (``attribute_map``).
``read_config`` reads a checkpoint's config before any weights (offline-safe, ``trust_remote_code`` as configured).
Which tasks a type can do is each task's fact (``Task.archs`` + ``Task.auto_class``, pipeline/tasks/); this module
imports no task.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import peft.utils.constants as peft_constants
import transformers
from huggingface_hub import try_to_load_from_cache
from transformers.models.auto import configuration_auto, modeling_auto

from pipeline.errors import ConfigError, ModelError
from pipeline.util.paths import resolve_pkg_path

KINDS = ("encoder", "decoder", "encoder-decoder")
# Model files (conf/model/) of each kind, named when a task needs another kind.
MODELS_BY_ARCH = {
    "encoder": "an encoder (model=bert-base-cased, distilbert, roberta, minilm-offline, or any BERT/ELECTRA/ALBERT-"
               "style checkpoint by model.name_or_path)",
    "decoder": "a decoder (model=gpt2, distilgpt2, gpt2-medium, or any GPT/Llama-style checkpoint by path)",
    "encoder-decoder": "an encoder-decoder (model=t5-small, t5-base, flan-t5-small, bart-base, or any T5/BART/"
                       "Marian/mBART checkpoint by path)",
}
# The model type each kind is tested with (tests/test_methods.py, the docs' compatibility table).
REPRESENTATIVE = {"encoder": "bert", "decoder": "gpt2", "encoder-decoder": "t5"}

# -- the hand-written facts: what no library says -----------------------------------------------------------------
# Model types transformers no longer ships: the reason is the library's history, which no mapping keeps.
REMOVED = {
    "transfo-xl": "Transformer-XL was deprecated in transformers 4.35 and removed in 5 (no model class loads it); "
                  "use a GPT-2 or Llama-style decoder (model=gpt2, or a Qwen2 / Llama checkpoint by path)",
}
# model.family values of earlier versions that stand for several model types of one lineage (the same modules).
ALIASES = {"llama": ("llama", "mistral", "qwen2", "qwen3"), "t5": ("t5", "mt5")}
# Feed-forward projections (method.targets=mlp): peft's mappings list attention projections only (IA3's feed-forward
# mapping names one module per block), so the full MLP of the common types is written here.
MLP_TARGETS = {
    "bert": ("intermediate.dense", "output.dense"), "roberta": ("intermediate.dense", "output.dense"),
    "distilbert": ("lin1", "lin2"), "gpt2": ("c_fc", "mlp.c_proj"),
    "llama": ("gate_proj", "up_proj", "down_proj"), "mistral": ("gate_proj", "up_proj", "down_proj"),
    "qwen2": ("gate_proj", "up_proj", "down_proj"), "qwen3": ("gate_proj", "up_proj", "down_proj"),
    "t5": ("wi", "wo"), "mt5": ("wi", "wo"), "bart": ("fc1", "fc2"),
}
# init=scratch tokenizers trained by pipeline/models/scratch.py for these types (kind, lowercase, prefix space,
# special ids of that tokenizer): kept as they were so the docs' smoke figures stay; any other type trains its own
# tokenizer class (transformers' TOKENIZER_MAPPING) on the data.
SCRATCH_TOKENIZERS = {
    "bert": ("wordpiece", True, False, {}), "distilbert": ("wordpiece", False, False, {}),
    "roberta": ("bpe", False, True, {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}),
    "gpt2": ("bpe", False, True, {}), "llama": ("bpe", False, False, {}), "mistral": ("bpe", False, False, {}),
    "qwen2": ("bpe", False, False, {}), "qwen3": ("bpe", False, False, {}),
    "t5": ("unigram", False, False, {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}),
    "mt5": ("unigram", False, False, {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}),
    "bart": ("bpe", False, True, {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
                                  "decoder_start_token_id": 2, "forced_eos_token_id": 2}),
}
# Summarization prefix of a checkpoint whose config has no task_specific_params (a scratch T5, flan-t5 folders saved
# without them): T5 was pre-trained multi-task with these prefixes.
SOURCE_PREFIX = {"t5": "summarize: "}
# The other config fields of each generic scratch size: attribute_map names one field per size (the encoder side,
# the model width); decoders' twins, embedding / head widths and feed-forward names differ per config class.
SIZE_TWINS = {
    "num_layers": ("decoder_layers", "num_decoder_layers"),
    "num_heads": ("decoder_attention_heads", "num_key_value_heads"),
    "intermediate_size": ("intermediate_size", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff", "ffn_dim", "hidden_dim",
                          "n_inner", "dff"),
    "hidden_size": ("embedding_size", "word_embed_proj_dim"),
}
HAND_WRITTEN = {"REMOVED": REMOVED, "ALIASES": ALIASES, "MLP_TARGETS": MLP_TARGETS,
                "SCRATCH_TOKENIZERS": SCRATCH_TOKENIZERS, "SOURCE_PREFIX": SOURCE_PREFIX, "SIZE_TWINS": SIZE_TWINS}
GENERIC = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
           "max_positions": "max_position_embeddings", "intermediate_size": "intermediate_size"}


@dataclass(frozen=True)
class Family:
    name: str                      # config.model_type (also model.family once resolved)
    arch: str                      # encoder | decoder | encoder-decoder
    config_class: str              # transformers config class (init=scratch builds it)
    tokenizer_kind: str | None     # wordpiece | bpe | unigram (scratch.py trains it); None: the type's own class
    lora_targets: tuple = ()       # peft's LoRA mapping for the type; () -> all-linear
    mlp_targets: tuple = ()        # feed-forward projections (MLP_TARGETS, else peft's IA3 feed-forward mapping)
    add_prefix_space: bool = False  # scratch tokenizer: byte-level BPE with a prefix space (pre-split words)
    lowercase: bool = False        # scratch tokenizer normalisation
    source_prefix: str = ""        # summarization prefix without task_specific_params (SOURCE_PREFIX)
    model_types: tuple = ()        # config.model_type values this family name accepts (ALIASES)
    fsdp_layers: tuple = ()        # the model class's _no_split_modules (FSDP auto-wrap)
    dropout_keys: tuple = ()       # config fields model.scratch.dropout sets
    conv1d: bool = False           # the modeling module uses transformers' Conv1D (GPT-2 style), not nn.Linear
    scratch_extra: dict = field(default_factory=dict)

    def peft_targets(self, peft_type: str):
        """peft's own target modules of this type for ``peft_type`` (the mapping peft falls back to), or None."""
        key = {"LN_TUNING": "LNTUNING_TARGET", "IA3_FEEDFORWARD": "IA3_FEEDFORWARD"}.get(peft_type,
                                                                             f"{peft_type}_TARGET")
        mapping = getattr(peft_constants, f"TRANSFORMERS_MODELS_TO_{key}_MODULES_MAPPING", None) or {}
        found = mapping.get(self.name)
        return list(found) if found else None


def kind_of(model_type: str) -> str | None:
    """encoder | decoder | encoder-decoder from transformers' Auto mappings (a seq2seq LM head: encoder-decoder; a
    masked LM head: encoder; a causal LM head: decoder; only classification / QA heads: encoder)."""
    if model_type in modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return "encoder-decoder"
    if model_type in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    if any(model_type in m for m in (modeling_auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
                                     modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
                                     modeling_auto.MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES)):
        return "encoder"
    return None


def auto_maps(auto_class: str, model_type: str) -> bool:
    """Whether transformers' ``auto_class`` (e.g. AutoModelForTokenClassification) has a class for ``model_type``."""
    names = getattr(transformers, auto_class)._model_mapping._model_mapping  # the lazy mapping's {type: class name}
    return model_type in names


def known_types() -> list[str]:
    return sorted(t for t in configuration_auto.CONFIG_MAPPING_NAMES if kind_of(t))


def _unknown(model_type: str, where: str) -> ModelError:
    if model_type in REMOVED:
        return ModelError(f"{where} is a '{model_type}' model: {REMOVED[model_type]}")
    return ModelError(f"{where} is a '{model_type}' model, a type transformers {transformers.__version__} does not "
                      f"know for text tasks; use a checkpoint of a known type (e.g. bert, electra, gpt2, qwen2, t5, "
                      f"bart, marian), or model.trust_remote_code=true if it ships its own code and you trust it")


@functools.lru_cache(maxsize=None)
def _family(model_type: str) -> Family:
    arch = kind_of(model_type)
    if arch is None or model_type not in configuration_auto.CONFIG_MAPPING_NAMES:
        raise _unknown(model_type, f"model type {model_type!r}")
    config_class = configuration_auto.CONFIG_MAPPING_NAMES[model_type]
    base = getattr(transformers, modeling_auto.MODEL_MAPPING_NAMES.get(model_type, ""), None)
    defaults = getattr(transformers, config_class)().to_dict()
    kind, lower, prefix_space, extra = SCRATCH_TOKENIZERS.get(model_type, (None, False, False, {}))
    lora = (peft_constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type) or ())
    mlp = MLP_TARGETS.get(model_type) or tuple(
        peft_constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(model_type) or ())
    dropouts = tuple(k for k, v in defaults.items() if isinstance(v, float) and not isinstance(v, bool)
                     and ("dropout" in k or "pdrop" in k) and "classif" not in k and "summary" not in k)
    return Family(model_type, arch, config_class, kind, lora_targets=tuple(lora), mlp_targets=tuple(mlp),
                  add_prefix_space=prefix_space, lowercase=lower, source_prefix=SOURCE_PREFIX.get(model_type, ""),
                  model_types=(model_type,), fsdp_layers=tuple(getattr(base, "_no_split_modules", None) or ()),
                  dropout_keys=dropouts, conv1d=base is not None and hasattr(sys.modules[base.__module__], "Conv1D"),
                  scratch_extra=dict(extra))


def get_family(name: str) -> Family:
    """The facts of a model type (``config.model_type``) or of an alias of earlier versions (``llama``, ``t5``)."""
    if not name or name in ("None", "null"):
        raise ConfigError("model.family is not set and no checkpoint gives it; set model.name_or_path=<folder or hub "
                          "id>, or model.scratch.model_type=<type> with model.init=scratch")
    try:
        return _family(str(name))
    except ModelError:
        if name in REMOVED:
            raise ConfigError(f"model.family={name}: {REMOVED[name]}") from None
        raise ConfigError(f"model.family={name!r} is not a model type transformers knows for text tasks; use a "
                          f"config.model_type such as bert, electra, gpt2, qwen2, t5, bart (or leave it unset: the "
                          f"checkpoint says it)") from None


# Old name kept for callers that list the families of earlier versions (tests, docs): every model type works now.
FAMILIES = {n: get_family(n) for n in ("bert", "distilbert", "roberta", "gpt2", "llama", "t5", "bart")}


def family_types(name: str) -> tuple:
    """The model types an explicit model.family accepts."""
    return ALIASES.get(name, (name,))


def check_model_type(family_name: str | None, model_type: str, model_name: str) -> None:
    """An explicit model.family must agree with the checkpoint's config.model_type."""
    if family_name and model_type not in family_types(str(family_name)):
        raise ModelError(f"model {model_name} is a '{model_type}' checkpoint but model.family={family_name}; "
                         f"remove model.family (the checkpoint says its type) or set model.family={model_type}")


# -- the checkpoint's config, before any weights ------------------------------------------------------------------
def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", "pkg://")) or os.path.exists(name)


def config_file(name_or_path: str, revision=None) -> Path | None:
    """config.json of a local folder or a cached hub id; None for a hub id not at hand. Raises for a local path
    that is not a folder holding config.json."""
    name = os.path.expanduser(resolve_pkg_path(str(name_or_path)))
    if _looks_local(str(name_or_path)):
        if not os.path.isdir(name):
            raise ModelError(f"model.name_or_path={name_or_path}: no such directory; give a folder holding "
                             f"config.json, or a hub id")
        path = Path(name) / "config.json"
        if not path.is_file():
            raise ModelError(f"model.name_or_path={name_or_path}: no config.json in that folder; is it a saved model "
                             f"(the model/ folder of a run, or a save_pretrained folder)?")
        return path
    try:
        cached = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:
        return None
    return Path(cached) if isinstance(cached, str) else None


def read_config(mcfg, download: bool = False):
    """The checkpoint's transformers config (AutoConfig, from the folder or the Hub cache; from the Hub itself only
    when ``download`` and not offline), checked: a known model type. None when a hub id is not at hand."""
    name = str(mcfg.name_or_path)
    path = config_file(name, mcfg.get("revision"))
    remote = bool(mcfg.get("trust_remote_code"))
    if path is None and not (download and os.environ.get("HF_HUB_OFFLINE") != "1"):
        return None
    if path is not None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"model.name_or_path={name}: config.json is not JSON ({e}); re-save the model") from None
        model_type = raw.get("model_type")
        if not model_type:
            raise ModelError(f"model.name_or_path={name}: config.json has no model_type; re-save the model with "
                             f"save_pretrained")
        if model_type not in configuration_auto.CONFIG_MAPPING_NAMES and not (remote and raw.get("auto_map")):
            raise _unknown(model_type, f"model.name_or_path={name}")
    source = str(path.parent) if path is not None and _looks_local(name) else resolve_pkg_path(name)
    try:
        return transformers.AutoConfig.from_pretrained(source, revision=mcfg.get("revision"), trust_remote_code=remote)
    except Exception as e:
        raise ModelError(f"model.name_or_path={name}: its config does not load ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160]})") from None


# -- generic scratch sizes -> the config class's fields ------------------------------------------------------------
def scratch_config_kwargs(family: Family, scratch: dict) -> dict:
    """Map the family-neutral ``model.scratch`` sizes to this type's config field names: ``attribute_map`` for the
    generic name, SIZE_TWINS for the other fields of the same size the default config has."""
    config_class = getattr(transformers, family.config_class)
    defaults = config_class().to_dict()
    amap = dict(getattr(config_class, "attribute_map", {}) or {})
    kwargs = dict(family.scratch_extra)
    sizes = {k: v for k, v in scratch.items() if v is not None and k not in ("vocab_size", "model_type")}
    for key, value in sizes.items():
        if key == "dropout":
            kwargs.update({k: value for k in family.dropout_keys})
            continue
        generic = GENERIC.get(key, key)
        main = amap.get(generic, generic)
        if main in defaults or generic in amap:
            kwargs[main] = value
        for twin in SIZE_TWINS.get(key, ()):
            if twin in defaults and twin != main:
                kwargs[twin] = value
    hidden, heads = sizes.get("hidden_size"), sizes.get("num_heads")
    if hidden and heads:  # per-head width: where a config has it, the width divided over the heads
        for name in ("d_kv", "head_dim"):
            if name in defaults or amap.get(name) in defaults:
                kwargs[amap.get(name, name) if name not in defaults else name] = hidden // heads
    return kwargs



def task_prefix(mcfg, task_key: str) -> str | None:
    """The input prefix of ``task_key`` that the checkpoint of ``mcfg`` names (its config's task_specific_params:
    t5-small's ``summarize: ``, ``translate English to German: ``); None where it names none (the caller falls back
    to the type's own, ``Family.source_prefix``)."""
    config = None
    if mcfg.get("name_or_path"):
        try:
            config = read_config(mcfg)
        except ModelError:
            config = None  # refused with its own line by the check stage
    params = (getattr(config, "task_specific_params", None) or {}) if config is not None else {}
    return str((params[task_key] or {}).get("prefix") or "") if task_key in params else None



def named_type(mcfg) -> str | None:
    """config.model_type of the model named by ``mcfg`` when its config.json is at hand (a folder, a cached hub id)."""
    if not mcfg.get("name_or_path"):
        return None
    try:
        path = config_file(str(mcfg.name_or_path), mcfg.get("revision"))
        return json.loads(path.read_text()).get("model_type") if path is not None else None
    except (ModelError, OSError, ValueError):
        return None


def model_type_of(mcfg, named: str | None) -> str:
    """The model type a run builds: the named checkpoint's (``named``) where at hand; else (init=scratch, or a hub
    id not at hand) an explicit model.family, else model.scratch.model_type (what the model file builds), else bert."""
    if named:
        return named
    explicit = mcfg.get("family")
    scratch = mcfg.get("scratch") or {}
    return (family_types(str(explicit))[0] if explicit else None) or scratch.get("model_type") or "bert"


def model_family(mcfg) -> Family:
    """The family of a model config: model.family once resolved (pipeline/stages/resolve.py sets it from the
    checkpoint), else worked out the same way for a config composed but not resolved (a run's .hydra/config.yaml)."""
    if mcfg.get("family") and (mcfg.get("scratch") or {}).get("model_type") == mcfg.get("family"):
        return get_family(mcfg.family)  # resolved
    return get_family(model_type_of(mcfg, named_type(mcfg)))
