"""The RLHF stage's steps: preference data -> reward model (reward, grpo, rloo) -> policy step (grpo, rloo, dpo, kto,
orpo). Called by the rlhf stage of ``finetune`` (pipeline/stages/run.py) and by ``finetune-rlhf``
(pipeline/commands/rlhf.py) on a config resolved and checked once (pipeline/stages/resolve.py)."""

from __future__ import annotations

from pathlib import Path

from pipeline.rlhf.policy import train_policy
from pipeline.rlhf.preference import chat_renderer, load_preferences
from pipeline.rlhf.reward import load_reward, train_reward


def run_steps(cfg, run_dir: Path, policy_path: str | None, run_data_source: str | None) -> dict:
    """Preference data -> reward model (reward, grpo, rloo) -> policy step. Returns rlhf_* metrics."""
    rl = cfg.rlhf
    template = str(rl.data.get("chat_template") or "chatml")
    prefs, dropped = load_preferences(rl.data, int(cfg.seed), run_data_source,
                                      renderer=lambda: chat_renderer(template, policy_path))
    metrics = {"rlhf_algorithm": str(rl.algorithm), "rlhf_train_pairs": len(prefs["train"]),
               "rlhf_dropped_empty_rows": sum(dropped.values()), "rlhf_policy_path": policy_path}
    scorer = None
    if rl.algorithm in ("reward", "grpo", "rloo"):
        if rl.reward_path:
            scorer = load_reward(str(rl.reward_path), int(rl.max_length))
            held_out = scorer.pair_accuracy(prefs["test"])
            metrics.update(rlhf_reward_accuracy=held_out["accuracy"], rlhf_reward_margin=held_out["margin"],
                           rlhf_reward_path=str(rl.reward_path))
        else:
            path, m = train_reward(cfg, prefs, policy_path, Path(run_dir) / "reward")
            metrics.update(m, rlhf_reward_path=path)
            scorer = load_reward(path, int(rl.max_length))
    if rl.algorithm != "reward":
        metrics.update(train_policy(cfg, prefs, policy_path, scorer, Path(run_dir) / "policy"))
    return metrics
