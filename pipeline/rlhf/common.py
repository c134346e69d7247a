"""Glue shared by the RLHF steps: TRL config objects from ``cfg.rlhf``, the LoRA config, tokenizers, and saving a
step's model as a plain reloadable folder (LoRA merged) on the main process only."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from accelerate import PartialState
from omegaconf import OmegaConf
from peft import PeftModel
from transformers import AutoConfig, AutoTokenizer
from trl import DPOConfig, GRPOConfig, KTOConfig, RewardConfig, RLOOConfig

from pipeline.errors import ConfigError, ModelError
from pipeline.families import get_family
from pipeline.infra.distributed import is_main, training_fields
from pipeline.models.methods import method_kind
from pipeline.models.methods import peft_config as method_peft_config
from pipeline.training.trainer import resolve_auto
from pipeline.util.paths import publish_dir

# TrainingArguments fields taken over from the run's trainer group (precision, logging, loader); the rest of
# cfg.trainer (epochs, eval/save strategy, best-model selection) belongs to the supervised stage.
SHARED_TRAINER_FIELDS = ("bf16", "tf32", "disable_tqdm", "dataloader_num_workers", "max_grad_norm", "weight_decay",
                         "lr_scheduler_type")


def wait_for_everyone() -> None:
    PartialState().wait_for_everyone()


def _cuda() -> bool:
    return torch.cuda.is_available()


def trl_args(config_class, fields, cfg, out_dir: Path, **extra):
    """``config_class`` (a TRL config) from the run's shared trainer fields, ``fields`` (a cfg.rlhf trainer block)
    and ``extra``; no checkpoints, no evaluation during training (the stage evaluates before and after itself)."""
    base = resolve_auto({k: cfg.trainer[k] for k in SHARED_TRAINER_FIELDS if cfg.trainer.get(k) is not None})
    user = OmegaConf.to_container(fields, resolve=True) if not isinstance(fields, dict) else dict(fields)
    kwargs = {**base, "output_dir": str(out_dir / "checkpoints"), "seed": int(cfg.seed), "report_to": "none",
              "save_strategy": "no", "eval_strategy": "no", "dataloader_pin_memory": _cuda(),
              "activation_checkpointing": bool(cfg.trainer.get("activation_checkpointing") or False),
              "logging_steps": 10, **user, **extra}

    kwargs = training_fields(kwargs)  # several CPU processes: use_cpu=True (gloo DDP), no unused-parameter search
    # learning_rate is the effective one: pipeline/config.py applied method.lr_scale (LoRA) when resolving the config
    try:
        return config_class(**kwargs)
    except TypeError as e:
        raise ConfigError(f"rlhf: {e} ({config_class.__name__} fields)") from e
    except ValueError as e:
        raise ConfigError(f"rlhf: {str(e).splitlines()[0]}") from e


def policy_config(cfg, out_dir: Path, max_length: int | None = None):
    """The TRL config of the policy step (rlhf.algorithm) with the stage's settings."""
    rl, algorithm = cfg.rlhf, str(cfg.rlhf.algorithm)
    if algorithm in ("grpo", "rloo"):
        g = rl.generation
        return trl_args(GRPOConfig if algorithm == "grpo" else RLOOConfig, rl.trainer, cfg, out_dir,
                        beta=float(rl.beta), num_generations=int(g.num_generations),
                        max_completion_length=int(g.max_completion_length), temperature=float(g.temperature))
    if algorithm == "dpo":
        config_class = DPOConfig
    elif algorithm == "kto":
        config_class = KTOConfig
    else:
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # trl.experimental warns when imported
        from trl.experimental.orpo import ORPOConfig as config_class  # imported only for ORPO: see the line above
    return trl_args(config_class, rl.trainer, cfg, out_dir, beta=float(rl.beta),
                    max_length=int(max_length or rl.max_length))


def reward_config(cfg, out_dir: Path, max_length: int | None = None, eos_token: str | None = None):
    extra = {"eos_token": eos_token} if eos_token else {}
    return trl_args(RewardConfig, cfg.rlhf.reward.trainer, cfg, out_dir, max_length=int(max_length or
                                                                                       cfg.rlhf.max_length), **extra)


def trl_configs(cfg, run_dir: Path) -> None:
    """The stage's TRL configs built once before any data or model work (pipeline/config.py): their own
    validation runs then, not after the fine-tuning."""
    rl = cfg.rlhf
    if rl.algorithm in ("reward", "grpo", "rloo") and not rl.get("reward_path"):
        reward_config(cfg, Path(run_dir) / "reward")
    if rl.algorithm != "reward":
        policy_config(cfg, Path(run_dir) / "policy")


def uses_peft(cfg) -> bool:
    """method=full -> False; LoRA-type methods -> True; other methods are refused for the RLHF stage."""
    m = cfg.method
    kind = method_kind(m)
    if kind == "full":
        return False
    if kind != "peft" or str(m.get("peft_type")) != "LORA":
        raise ConfigError(f"rlhf supports method=full or a LoRA method (lora, rslora, dora), not method={m.name}")
    return True


def peft_config(cfg, family_name: str, task_type: str):
    """None for method=full; else the peft LoraConfig that pipeline/methods.py builds from cfg.method, for
    ``task_type`` (CAUSAL_LM for the policy, SEQ_CLS for the reward model: its score head trains and is saved)."""
    if not uses_peft(cfg):
        return None

    return method_peft_config(cfg.method, get_family(family_name), task_type, (), total_steps=None)


def family_of(path: str) -> str:
    """The pipeline family of a saved model: its config.model_type (any type transformers knows)."""
    try:
        model_type = AutoConfig.from_pretrained(path).model_type
    except Exception as e:
        raise ModelError(f"{path}: cannot read config.json ({type(e).__name__}); give the model/ folder of a run")
    return get_family(model_type).name


def load_tokenizer(path: str, padding_side: str = "right"):
    """Tokenizer of a saved model; GPT-2-style tokenizers get pad = EOS."""
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise ModelError(f"{path}: cannot load the tokenizer ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def check_model_dir(path: str, what: str) -> str:
    p = Path(str(path)).expanduser()
    if not (p / "config.json").is_file():
        raise ModelError(f"rlhf.{what}={path}: no config.json there; give the model/ folder of an earlier run")
    return str(p)


def plain_model(model):
    """A model without PEFT wrappers: LoRA merged into a copy (the trainer's model is left as it is)."""
    if isinstance(model, PeftModel):
        return copy.deepcopy(model).merge_and_unload()
    return model


def save_model(model, tokenizer, out_dir: Path) -> str:
    """Write ``out_dir`` (weights + tokenizer, LoRA merged) on the main process, swapped in when complete."""
    if is_main():
        partial = out_dir.with_name(f".{out_dir.name}.partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        plain_model(model).save_pretrained(str(partial))
        tokenizer.save_pretrained(str(partial))
        publish_dir(partial, out_dir)
    wait_for_everyone()
    return str(out_dir)


def unwrap(trainer):
    return trainer.accelerator.unwrap_model(trainer.model)

