"""Method stage: how the pretrained weights are fine-tuned (conf/method/). ``apply`` is the one code path.

A method config has a ``kind``: ``full`` (every weight trains), ``freeze`` (only the task head and the last
``train_last_layers`` blocks train) or ``peft``. For ``peft`` the config names a ``peft_type`` (a ``peft.PeftType``)
and every key that is not a pipeline key is passed to that PEFT config class, so ``method.r=16`` reaches
``LoraConfig(r=16)``. Target modules come from peft's own per-model mapping for the method (``targets: attention``),
else ``all-linear``; a method that cannot take ``all-linear`` is refused, naming ``method.target_modules``.
Combinations that cannot work are refused by ``check`` with one line (``REFUSALS``), before any data is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
from omegaconf import OmegaConf
from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PeftType, get_peft_model, prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig
from transformers.pytorch_utils import Conv1D

from pipeline.config.typecheck import library_fields
from pipeline.errors import ConfigError
from pipeline.families import REPRESENTATIVE, get_family
from pipeline.tasks import task_class, task_classes
from pipeline.util.paths import CONF_DIR

log = logging.getLogger(__name__)

METHODS = ("full", "freeze", "lora", "rslora", "dora", "adalora", "ia3", "vera", "prefix", "prompt", "p-tuning",
           "loha", "lokr", "oft", "boft", "ln-tuning", "qlora")  # conf/method/*.yaml
KINDS = ("full", "freeze", "peft")
# Keys the pipeline reads; every other key of a peft method config goes to the PEFT config class.
PIPELINE_KEYS = {"name", "kind", "peft_type", "targets", "lr_scale", "train_last_layers", "load_in_4bit"}
PROMPT_TYPES = ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING")
CONV1D_UNSUPPORTED = ("LOHA", "LOKR", "OFT", "BOFT")


@dataclass(frozen=True)
class Refusal:
    """A method x setting that cannot work: ``applies(method_cfg, cfg, family)`` -> refuse with why + instead."""
    what: str
    applies: Callable
    why: str
    instead: str


def _cuda() -> bool:
    return torch.cuda.is_available()


def _bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def _checkpointing(cfg) -> bool:
    t = cfg.get("trainer") or {}
    return bool(t.get("activation_checkpointing") or t.get("gradient_checkpointing"))


REFUSALS = (
    Refusal("GPT-2 Conv1D", lambda m, cfg, fam: m.get("peft_type") in CONV1D_UNSUPPORTED and fam.conv1d,
            "peft cannot wrap the Conv1D layers of GPT-2-style models (transformers' Conv1D) with this method",
            "method=lora, dora, ia3 or vera (they support Conv1D)"),
    Refusal("prefix on encoders", lambda m, cfg, fam: m.get("peft_type") == "PREFIX_TUNING" and fam.arch == "encoder",
            "prefix tuning feeds past key values, which encoder-only models (BERT family) do not take in "
            "transformers 5", "method=prompt or p-tuning (virtual tokens), or lora"),
    Refusal("prefix + checkpointing", lambda m, cfg, fam: m.get("peft_type") == "PREFIX_TUNING" and _checkpointing(cfg),
            "prefix tuning's past key values do not survive gradient (activation) checkpointing",
            "trainer.activation_checkpointing=false trainer.gradient_checkpointing=false, or method=lora"),
    Refusal("QLoRA without CUDA", lambda m, cfg, fam: bool(m.get("load_in_4bit")) and not _cuda(),
            "QLoRA loads the base model in 4 bit with bitsandbytes, which needs a CUDA GPU (none found)",
            "method=lora (same adapter, full-precision base)"),
    Refusal("QLoRA on a scratch model", lambda m, cfg, fam: bool(m.get("load_in_4bit")) and cfg.model.init == "scratch",
            "QLoRA quantizes pretrained weights; model.init=scratch builds the model from config",
            "method=lora with init=scratch, or a pretrained model"),
    Refusal("QLoRA without bitsandbytes", lambda m, cfg, fam: bool(m.get("load_in_4bit")) and not _bitsandbytes(),
            "QLoRA needs the bitsandbytes package", "pip install bitsandbytes, or method=lora"),
)


def method_kind(mcfg) -> str:
    kind = mcfg.get("kind") or ("peft" if mcfg.get("peft_type") else "full")
    if kind not in KINDS:
        raise ConfigError(f"method.kind={kind}: use one of {list(KINDS)}")
    if kind == "peft" and not mcfg.get("peft_type"):
        raise ConfigError(f"method={mcfg.name}: kind=peft needs method.peft_type (a peft.PeftType, e.g. LORA)")
    return kind


def validate(cfg, family) -> None:
    """Refuse a method that cannot work with this family / task / trainer setting, with one line (called by check)."""
    mcfg = cfg.method
    kind = method_kind(mcfg)
    for rule in REFUSALS:
        if rule.applies(mcfg, cfg, family):
            raise ConfigError(f"method={mcfg.name} with model.family={family.name}: {rule.why}; use {rule.instead}")
    task = task_class(str(cfg.task.name))
    why = task.refuse_method(mcfg, family)
    if why:
        raise ConfigError(f"method={mcfg.name} with task={task.name}: {why}")
    if kind == "peft":
        peft_config(mcfg, family, task.peft_task_type, task.head_names, total_steps=1, model=None)  # keys / values


def refusal(method: str, task_name: str, trainer: dict | None = None, family: str | None = None) -> str | None:
    """The one-line refusal of ``method`` for ``task_name`` on the family its architecture is tested with (None:
    allowed). Used by tests and the README table."""
    fam = get_family(family or REPRESENTATIVE[task_class(task_name).archs[0]])
    cfg = OmegaConf.create({"method": load_method(method), "trainer": trainer or {}, "task": {"name": task_name},
                            "model": {"init": "pretrained"}})
    try:
        validate(cfg, fam)
    except ConfigError as e:
        return str(e)
    return None


def load_method(name: str):
    """conf/method/<name>.yaml with its ``defaults: [parent, _self_]`` merged in (as Hydra composes it)."""
    cfg = OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml")
    parents = [load_method(d) for d in cfg.pop("defaults", []) if d != "_self_"]
    return OmegaConf.merge(*parents, cfg)


def load_kwargs(mcfg) -> dict:
    """Extra ``from_pretrained`` kwargs of a method: QLoRA's 4-bit NF4 quantization."""
    if not mcfg.get("load_in_4bit"):
        return {}

    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_use_double_quant=True,
                                                      bnb_4bit_compute_dtype=torch.bfloat16)}


def attention_targets(family, peft_type: str | None):
    """peft's own targets of this model type for the method (LoRA's for LoRA-style methods), else all-linear."""
    found = family.peft_targets(str(peft_type)) if peft_type else None
    if peft_type == "IA3" and found:  # peft's IA3 list holds its feed-forward modules too: attention is the rest
        found = [t for t in found if t not in (family.peft_targets("IA3_FEEDFORWARD") or [])] or found
    return found or list(family.lora_targets) or "all-linear"


def resolve_targets(targets, family, model=None, peft_type: str | None = None):
    """``attention`` | ``mlp`` | ``attention+mlp`` | ``norms`` | ``all-linear`` | a list of module names.
    ``attention``: peft's own mapping of the model type for ``peft_type`` (the list peft itself falls back to), else
    LoRA's, else ``all-linear`` (every linear layer but the output head)."""
    if targets is None or isinstance(targets, str) and targets == "all-linear":
        return targets
    if isinstance(targets, (list, tuple)) and all(isinstance(t, str) for t in targets):
        return list(targets)
    if not isinstance(targets, str):
        raise ConfigError(f"method.targets={targets!r}: use attention, mlp, attention+mlp, norms, all-linear or a "
                          f"list of module names")
    names = []
    for part in targets.split("+"):
        if part == "attention":
            found = attention_targets(family, peft_type)
            if found == "all-linear":
                return "all-linear"  # covers the feed-forward layers too
            names += [t for t in found if t not in names]
        elif part == "mlp":
            if not family.mlp_targets:  # no library lists this type's feed-forward modules
                return "all-linear"
            names += [t for t in family.mlp_targets if t not in names]
        elif part == "norms":
            names += norm_module_names(model) if model is not None else ["<norms>"]
        else:
            raise ConfigError(f"method.targets={targets}: use attention, mlp, attention+mlp, norms, all-linear or "
                              f"a list of module names")
    return names


def linear_names(model, heads: tuple) -> list[str]:
    """Full names of the linear layers outside the task head and the output embedding (all-linear, spelled out)."""
    out = model.get_output_embeddings()
    return sorted(n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not out
                  and not any(n == h or n.startswith(h + ".") for h in heads))


def norm_module_names(model) -> list[str]:
    """Last name segment of every LayerNorm / RMSNorm module (LN-tuning targets, family-independent)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if "norm" in type(m).__name__.lower()})


def peft_config(mcfg, family, task_type: str, heads: tuple, total_steps: int | None, model=None):
    """The PEFT config object for ``mcfg``: one mapping for every PEFT method. ``task_type`` is the peft.TaskType,
    ``heads`` the task's new head modules (kept out of ``all-linear``: they are trained whole)."""
    try:
        config_class = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[str(mcfg.peft_type)]]
    except KeyError:
        raise ConfigError(f"method.peft_type={mcfg.peft_type} is not a peft.PeftType; use one of "
                          f"{sorted(t.name for t in PEFT_TYPE_TO_CONFIG_MAPPING)}") from None
    fields = {f.name for f in dataclasses.fields(config_class)}
    kwargs = {k: v for k, v in OmegaConf.to_container(mcfg, resolve=True).items() if k not in PIPELINE_KEYS}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ConfigError(f"method={mcfg.name}: {unknown} are not {config_class.__name__} fields; "
                          f"use some of {sorted(fields - {'peft_type', 'task_type'})}")

    library_fields(kwargs, config_class, "method.")  # types of the config class's fields, ranges (r >= 1, ...)
    kwargs["task_type"] = task_type
    targets = resolve_targets(mcfg.get("targets"), family, model, str(mcfg.peft_type))
    if targets == "all-linear" and "target_modules" not in fields:
        raise ConfigError(f"method={mcfg.name}: peft knows no target modules of model type {family.name} for "
                          f"{mcfg.peft_type}; set method.target_modules=[module names] (print(model) shows them)")
    if "target_modules" in fields and kwargs.get("target_modules") is None and targets is not None:
        kwargs["target_modules"] = targets
    if "feedforward_modules" in fields and kwargs.get("feedforward_modules") is None:
        # all-linear on a type peft has no IA3 row for: peft would ask for feedforward_modules; none are singled out
        kwargs["feedforward_modules"] = [] if targets == "all-linear" and not family.peft_targets("IA3") else \
            None if targets == "all-linear" else [t for t in targets or () if t in family.mlp_targets]
    if heads and targets == "all-linear" and "exclude_modules" in fields:
        kwargs.setdefault("exclude_modules", list(heads))  # the head is trained whole (modules_to_save)
    elif heads and targets == "all-linear" and model is not None and kwargs.get("target_modules") == "all-linear":
        kwargs["target_modules"] = linear_names(model, heads)  # VeRA has no exclude_modules: list them instead
    if model is not None and str(mcfg.peft_type) in PROMPT_TYPES:
        # peft reads these from a few spellings of config.to_dict() (DistilBERT's dim / n_layers / n_heads are not
        # among them); the config's generic names (attribute_map) give them for every type
        c = model.config
        for key, value in (("token_dim", getattr(c, "hidden_size", None)),
                           ("num_layers", getattr(c, "num_hidden_layers", None)),
                           ("num_attention_heads", getattr(c, "num_attention_heads", None))):
            if key in fields and kwargs.get(key) is None and value:
                kwargs[key] = value
    if "total_step" in fields and kwargs.get("total_step") is None:
        kwargs["total_step"] = total_steps
    try:
        return config_class(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"method={mcfg.name}: {str(e).splitlines()[0]}") from None


def total_steps(trainer_cfg, num_train: int, world_size: int = 1) -> int:
    """Optimizer steps of the run (AdaLoRA's budget schedule needs it before training)."""
    if int(trainer_cfg.max_steps) > 0:
        return int(trainer_cfg.max_steps)
    per_step = int(trainer_cfg.per_device_train_batch_size) * world_size * int(trainer_cfg.gradient_accumulation_steps)
    return max(1, math.ceil(num_train / per_step) * math.ceil(float(trainer_cfg.num_train_epochs)))


def apply(mcfg, model, family, task, total_steps: int | None = None, keep_base: bool = False):
    """Return the model prepared for training with method ``mcfg``. ``keep_base``: remember the untouched base
    weights so the adapter can be saved with them (a scratch base exists nowhere else)."""
    kind = method_kind(mcfg)
    if kind == "full":
        return model
    if kind == "freeze":
        return freeze(model, task.head_names, int(mcfg.get("train_last_layers") or 0))

    base = copy.deepcopy(model) if keep_base else None
    if mcfg.get("load_in_4bit"):
        model = prepare_model_for_kbit_training(model)
    new_modules = tuple(model.__dict__.get("pipeline_new_modules", ())) if task.head_names else ()  # load.py's
    outer = set(task.head_names) | set(new_modules)  # ELECTRA's classifier.dense lies inside the head 'classifier'
    new_modules = tuple(m for m in new_modules if not any(m.startswith(o + ".") for o in outer))
    heads = tuple(task.head_names) + tuple(m for m in new_modules if m not in task.head_names)
    pc = peft_config(mcfg, family, task.peft_task_type, heads, total_steps, model)
    if new_modules and "modules_to_save" in {f.name for f in dataclasses.fields(pc)}:
        pc = dataclasses.replace(pc, modules_to_save=sorted(set(pc.modules_to_save or ()) | set(new_modules)))
    new_tokens = list(getattr(task, "new_token_ids", None) or [])  # tokens the task added (a chat template's)
    new_tokens += [t for t in model.__dict__.get("pipeline_new_rows", ()) if t not in new_tokens]  # load.py's
    if new_tokens and getattr(pc, "trainable_token_indices", False) is None:
        pc = dataclasses.replace(pc, trainable_token_indices=new_tokens)  # LoRA: their embedding rows train too
    peft_model = get_peft_model(model, pc)
    peft_model.__dict__["pipeline_base"] = base  # not a submodule: saved separately (callbacks.save_base)
    return peft_model


def head_modules(model, heads: tuple) -> list:
    """The task's head modules (``Task.head_names``), or the LM head when the task has none of its own (tied to the
    input embeddings where the model ties them)."""
    if heads:
        return [getattr(model, n) for n in heads if hasattr(model, n)]
    return [model.get_output_embeddings()]


def layer_stacks(model) -> list:
    """The model's stacks of identical blocks (BERT encoder.layer, GPT-2 h, T5 encoder.block + decoder.block)."""
    found = []
    for name, m in model.named_modules():
        if (isinstance(m, torch.nn.ModuleList) and len(m) and len({type(x) for x in m}) == 1
                and name.rsplit(".", 1)[-1] in ("layer", "layers", "h", "block", "blocks")
                and not any(name.startswith(f + ".") for f, _ in found)):
            found.append((name, m))
    return [m for _, m in found]


def freeze(model, heads: tuple, last_layers: int):
    """Train only the task head and the last ``last_layers`` blocks of every stack."""
    for p in model.parameters():
        p.requires_grad_(False)
    modules = head_modules(model, heads)
    for stack in layer_stacks(model):
        modules += list(stack)[len(stack) - last_layers:] if last_layers > 0 else []
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)
    return model


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def compatibility_table() -> str:
    """The docs' table, one column per task (on the family its architecture is tested with): ✓ where
    tests/test_methods.py trains the cell, the refusal where check refuses it."""
    tasks = list(task_classes().values())
    head = "| method | " + " | ".join(f"{REPRESENTATIVE[t.archs[0]]} ({t.name})" for t in tasks) + " |"
    rows = [head, "|---|" + "---|" * len(tasks)]
    for m in METHODS:
        cells = []
        for t in tasks:
            if load_method(m).get("load_in_4bit"):  # machine-dependent: state the requirement, not this machine
                cells.append("CUDA + bitsandbytes only")
                continue
            why = refusal(m, t.name)
            prompt_type = load_method(m).get("peft_type") in ("PROMPT_TUNING", "P_TUNING")
            ok = f"✓ {t.virtual_token_note}" if prompt_type and t.virtual_token_note else "✓"
            cells.append("✗ " + why.split(": ", 1)[1].split("; use ")[0] if why else ok)
        rows.append(f"| `{m}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# The architectures of the docs' second table: the lecture's, and the Llama-style decoders of today.
ARCHITECTURES = ("albert", "bert", "distilbert", "electra", "roberta", "ctrl", "openai-gpt", "gpt2", "llama", "qwen2",
                 "bart", "t5", "marian", "mbart")


def targets_note(method: str, family) -> str:
    """Where a method's target modules come from on ``family``: peft's own mapping, all-linear, or not needed."""
    mcfg = load_method(method)
    if method_kind(mcfg) != "peft" or mcfg.get("peft_type") in PROMPT_TYPES or mcfg.get("targets") == "norms":
        return "✓"
    targets = resolve_targets(mcfg.get("targets"), family, None, str(mcfg.peft_type))
    return "✓ all-linear" if targets == "all-linear" else "✓"


def architecture_table() -> str:
    """The docs' table of every method against each architecture (its first task): ✓ where peft's own mapping gives
    the targets (or none are needed), ✓ all-linear where peft has no mapping for the type, the refusal where check
    refuses it (before any data or weights)."""
    fams = [get_family(t) for t in ARCHITECTURES]
    first = {a: next(n for n, t in task_classes().items() if a in t.archs) for a in {f.arch for f in fams}}
    rows = ["| method | " + " | ".join(f"{f.name} ({first[f.arch]})" for f in fams) + " |",
            "|---|" + "---|" * len(fams)]
    for m in METHODS:
        cells = []
        for f in fams:
            if load_method(m).get("load_in_4bit"):
                cells.append("CUDA + bnb")
                continue
            why = refusal(m, first[f.arch], family=f.name)
            cells.append("✗ " + why.split(": ", 1)[1].split("; use ")[0].split(",")[0] if why else targets_note(m, f))
        rows.append(f"| `{m}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(compatibility_table())
    print()
    print(architecture_table())
