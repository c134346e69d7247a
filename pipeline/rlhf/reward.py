"""Reward model: a one-score sequence classifier trained with trl.RewardTrainer on preference pairs, its held-out
pair accuracy, and ``RewardScorer``: the reward function GRPO / RLOO call and the evaluation uses.

Why a scorer rather than the bare model in ``reward_funcs``: TRL scores ``prompt + completion`` with
``add_special_tokens=False``, while RewardTrainer trained on ``tokenizer(prompt + response + eos)`` with special
tokens. For a BERT-family reward model that drops the [CLS] token its pooler reads; the scorer tokenizes exactly as
in training (and keeps the end of long texts: truncation from the left).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import transformers
from accelerate import PartialState
from transformers import AutoModelForSequenceClassification
from trl import RewardTrainer

from pipeline.errors import ConfigError
from pipeline.families import get_family
from pipeline.models.scratch import build_config, train_tokenizer
from pipeline.rlhf.common import (
    check_model_dir,
    family_of,
    load_tokenizer,
    peft_config,
    reward_config,
    save_model,
    unwrap,
)
from pipeline.rlhf.preference import fit_pairs
from pipeline.util.paths import resolve_pkg_path

log = logging.getLogger("pipeline.rlhf")


class RewardScorer:
    """Callable reward function (TRL signature) around a saved or in-memory sequence-classification model."""

    __name__ = "reward_model"

    def __init__(self, model, tokenizer, max_length: int, batch_size: int = 32):
        self.model, self.tok, self.max_length, self.batch_size = model.eval(), tokenizer, max_length, batch_size
        self.suffix = tokenizer.eos_token or tokenizer.sep_token or ""

    @classmethod
    def load(cls, path: str, max_length: int):
        tok = load_tokenizer(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        return cls(model, tok, max_length)

    def scores(self, texts: list[str]) -> list[float]:
        device = PartialState().device
        self.model.to(device)
        out = []
        side, self.tok.truncation_side = self.tok.truncation_side, "left"
        try:
            for i in range(0, len(texts), self.batch_size):
                batch = [t if t.endswith(self.suffix) else t + self.suffix for t in texts[i:i + self.batch_size]]
                enc = self.tok(batch, return_tensors="pt", padding=True, truncation=True,
                               max_length=self.max_length).to(device)
                with torch.inference_mode():
                    out += self.model(**enc).logits[:, 0].float().tolist()
        finally:
            self.tok.truncation_side = side
        return out

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return self.scores([p + c for p, c in zip(prompts, completions)])

    def pair_accuracy(self, pairs) -> dict:
        chosen = self.scores([p + c for p, c in zip(pairs["prompt"], pairs["chosen"])])
        rejected = self.scores([p + r for p, r in zip(pairs["prompt"], pairs["rejected"])])
        margins = [c - r for c, r in zip(chosen, rejected)]
        return {"accuracy": sum(m > 0 for m in margins) / len(margins), "margin": sum(margins) / len(margins)}


def build(rcfg, cfg, policy_path: str | None, prefs):
    """(model, tokenizer, family) of the reward model before training, from rlhf.reward.init."""
    auto = transformers.AutoModelForSequenceClassification
    if rcfg.init == "scratch":
        family = get_family(rcfg.family)
        texts = (t for split in prefs.values() for col in ("prompt", "chosen", "rejected") for t in split[col])
        tok = train_tokenizer(family, texts, int(cfg.model.scratch.vocab_size))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        config = build_config(family, tok, dict(cfg.model.scratch), {"num_labels": 1})
        transformers.set_seed(int(cfg.seed))
        return auto.from_config(config), tok, family.name
    if rcfg.init == "policy":
        if policy_path is None:
            raise ConfigError("rlhf.reward.init=policy needs a policy: run after fine-tuning or set "
                              "rlhf.policy_path=<run>/model (or rlhf.reward.init=pretrained|scratch)")
        path = policy_path
    elif rcfg.init == "pretrained":
        if not rcfg.get("name_or_path"):
            raise ConfigError("rlhf.reward.init=pretrained needs rlhf.reward.name_or_path=<path or hub id>")
        path = resolve_pkg_path(str(rcfg.name_or_path))
    else:
        raise ConfigError(f"rlhf.reward.init={rcfg.init}: use policy, pretrained or scratch")
    tok = load_tokenizer(path)
    transformers.set_seed(int(cfg.seed))
    model = auto.from_pretrained(path, num_labels=1)  # a fresh one-score head on the checkpoint's body
    model.config.pad_token_id = tok.pad_token_id
    return model, tok, family_of(path)


def train_reward(cfg, prefs, policy_path: str | None, out_dir: Path) -> tuple[str, dict]:
    """Train, evaluate on the held-out pairs before and after, save to ``out_dir/model``. Returns (path, metrics)."""
    rl = cfg.rlhf
    model, tok, family = build(rl.reward, cfg, policy_path, prefs)
    max_length = int(rl.max_length)
    if getattr(model.config, "max_position_embeddings", None):
        max_length = min(max_length, int(model.config.max_position_embeddings))
    args = reward_config(cfg, out_dir, max_length, eos_token=tok.eos_token or tok.sep_token)
    before = RewardScorer(model, tok, max_length).pair_accuracy(prefs["test"])

    train = fit_pairs(prefs["train"], tok, max_length)  # long prompts keep their end instead of being dropped
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tok,
                            peft_config=peft_config(cfg, family, "SEQ_CLS"))
    result = trainer.train()
    trained = unwrap(trainer)
    after = RewardScorer(trained, tok, max_length).pair_accuracy(prefs["test"])
    path = save_model(trained, tok, out_dir / "model")
    log.info("reward model: held-out accuracy %.3f (before training %.3f) -> %s", after["accuracy"],
             before["accuracy"], path)
    return path, {"rlhf_reward_accuracy": after["accuracy"], "rlhf_reward_margin": after["margin"],
                  "rlhf_reward_accuracy_before": before["accuracy"], "rlhf_reward_train_loss": result.training_loss,
                  "rlhf_reward_train_seconds": result.metrics.get("train_runtime"),
                  "rlhf_reward_eval_pairs": len(prefs["test"])}


def load_reward(path: str, max_length: int) -> RewardScorer:
    return RewardScorer.load(check_model_dir(path, "reward_path"), max_length)
