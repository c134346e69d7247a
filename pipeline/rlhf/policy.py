"""The policy step: online RL (GRPO / RLOO against the reward model) or preference tuning (DPO / KTO / ORPO), each a
TRL trainer started from the saved policy (``policy_path``, which is also the frozen reference), measured on
held-out data before and after, saved to ``<out_dir>/model`` with ``generations.jsonl`` beside it."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForCausalLM
from trl import DPOTrainer, GRPOTrainer, KTOTrainer, RLOOTrainer

from pipeline.errors import ConfigError
from pipeline.rlhf import evaluate as ev
from pipeline.rlhf.common import family_of, load_tokenizer, peft_config, policy_config, save_model, unwrap
from pipeline.rlhf.preference import fit_pairs, prompts_only

log = logging.getLogger("pipeline.rlhf")
ONLINE = ("grpo", "rloo")
OFFLINE = ("dpo", "kto", "orpo")


def _online_trainer(algorithm, cfg, policy_path, tok, prompts, scorer, peft, out_dir):
    trainer = GRPOTrainer if algorithm == "grpo" else RLOOTrainer
    return trainer(model=policy_path, reward_funcs=[scorer], args=policy_config(cfg, out_dir),
                   train_dataset=datasets.Dataset.from_dict({"prompt": prompts}), processing_class=tok,
                   peft_config=peft)


def kto_rows(pairs):
    """Pairs -> unpaired KTO rows: (prompt, chosen, True) and (prompt, rejected, False)."""
    rows = {"prompt": [], "completion": [], "label": []}
    for p, c, r in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"]):
        rows["prompt"] += [p, p]
        rows["completion"] += [c, r]
        rows["label"] += [True, False]
    return datasets.Dataset.from_dict(rows)


def _offline_trainer(algorithm, cfg, policy_path, tok, train, peft, out_dir, max_length: int):
    args = policy_config(cfg, out_dir, max_length)
    if algorithm == "dpo":
        return DPOTrainer(model=policy_path, args=args, train_dataset=train, processing_class=tok, peft_config=peft)
    if algorithm == "kto":
        return KTOTrainer(model=policy_path, args=args, train_dataset=kto_rows(train), processing_class=tok,
                          peft_config=peft)
    # trl.experimental warns when imported (policy_config silenced it): imported only for ORPO
    from trl.experimental.orpo import ORPOTrainer

    return ORPOTrainer(model=policy_path, args=args, train_dataset=train, processing_class=tok, peft_config=peft)


def _suffixed(metrics: dict, suffix: str) -> dict:
    return {f"rlhf_{k}{suffix}": v for k, v in metrics.items()}


def train_policy(cfg, prefs, policy_path: str, scorer, out_dir: Path) -> dict:
    """Run rlhf.algorithm on the policy at ``policy_path``; ``scorer`` (a RewardScorer) for grpo / rloo."""
    rl, algorithm, seed = cfg.rlhf, str(cfg.rlhf.algorithm), int(cfg.seed)
    if algorithm not in ONLINE + OFFLINE:
        raise ConfigError(f"rlhf.algorithm={algorithm}: use reward, grpo, rloo, dpo, kto or orpo")
    if algorithm in ONLINE and scorer is None:
        raise ConfigError(f"rlhf={algorithm} needs a reward model: rlhf.reward_path=<run>/reward/model or let the "
                          f"stage train one")
    tok = load_tokenizer(policy_path, padding_side="left" if algorithm in ONLINE else "right")
    ref = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32)  # the SFT policy = reference
    limit = int(getattr(ref.config, "n_positions", 0) or getattr(ref.config, "max_position_embeddings", 0) or 1024)
    max_prompt = min(int(rl.max_prompt_length), limit - int(rl.generation.max_completion_length))
    if max_prompt < 1:
        raise ConfigError(f"rlhf.generation.max_completion_length={rl.generation.max_completion_length} leaves no room "
                          f"for a prompt in the model's {limit} positions")
    eval_prompts = ev.truncate_prompts(prompts_only(prefs["test"])["prompt"][:int(rl.eval.num_prompts)], tok,
                                       max_prompt)
    temperature = float(rl.generation.temperature)
    chosen_ids, rejected_ids = ev.pair_ids(tok, prefs["test"], max_prompt, min(int(rl.max_length), limit))

    before, before_rows = ev.sample_and_score(ref, None, tok, eval_prompts, rl.eval, temperature, seed, scorer)
    before.update(ev.preference(ref, None, chosen_ids, rejected_ids, float(rl.beta)))

    peft = peft_config(cfg, family_of(policy_path), "CAUSAL_LM")
    if algorithm in ONLINE:
        train_prompts = ev.truncate_prompts(prompts_only(prefs["train"])["prompt"], tok, max_prompt)
        trainer = _online_trainer(algorithm, cfg, policy_path, tok, train_prompts, scorer, peft, out_dir)
    else:
        max_length = min(int(rl.max_length), limit)
        train = fit_pairs(prefs["train"], tok, max_length)
        trainer = _offline_trainer(algorithm, cfg, policy_path, tok, train, peft, out_dir, max_length)
    result = trainer.train()
    policy = unwrap(trainer)

    after, after_rows = ev.sample_and_score(policy, ref, tok, eval_prompts, rl.eval, temperature, seed, scorer)
    after.update(ev.preference(policy, ref, chosen_ids, rejected_ids, float(rl.beta)))
    tok.padding_side = "right"
    path = save_model(policy, tok, out_dir / "model")
    ev.write_generations(out_dir / "generations.jsonl", before_rows, after_rows)

    kl = after.pop("kl_to_reference", None)
    implicit = {k: after.pop(k) for k in ("implicit_reward_margin", "implicit_reward_accuracy") if k in after}
    metrics = {**_suffixed(before, "_before"), **_suffixed(after, "_after"), **_suffixed(implicit, ""),
               "rlhf_kl_to_reference": kl, "rlhf_algorithm": algorithm, "rlhf_policy_model": path,
               "rlhf_train_loss": result.training_loss, "rlhf_train_seconds": result.metrics.get("train_runtime"),
               "rlhf_train_steps": result.global_step, "rlhf_eval_prompts": len(eval_prompts),
               "rlhf_eval_pairs": len(chosen_ids)}
    log.info("rlhf %s: %s", algorithm, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    return metrics
