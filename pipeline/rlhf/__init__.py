"""Optional RLHF stage (``rlhf=<option>``, conf/rlhf/) built on TRL 1.16's trainers.

    reward      RewardTrainer -> <run>/reward/model (sequence classifier, one score)
    grpo, rloo  reward model (trained here, or rlhf.reward_path) -> GRPOTrainer / RLOOTrainer -> <run>/policy/model
    dpo, kto, orpo   preference tuning on pairs -> <run>/policy/model

Stages hand results on through directories: the policy (and reference) is this run's fine-tuned model, saved to
<run>/sft/model, or ``rlhf.policy_path``; the reward model is <run>/reward/model or ``rlhf.reward_path``.
``finetune-rlhf`` (python -m pipeline.rlhf) runs this stage alone from such paths.
PPO no longer exists in TRL 1.16: GRPO / RLOO with a learned reward model is the RLHF path.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.errors import ConfigError

log = logging.getLogger("pipeline.rlhf")
ALGORITHMS = ("reward", "grpo", "rloo", "dpo", "kto", "orpo")


def validate(cfg) -> None:
    """Checks before any heavy work (called by pipeline.check.validate when rlhf is set)."""
    from pipeline.rlhf.common import uses_peft

    rl = cfg.rlhf
    uses_peft(cfg)  # method=full or a LoRA method
    if rl.algorithm not in ALGORITHMS:
        raise ConfigError(f"rlhf.algorithm={rl.algorithm}: use one of {list(ALGORITHMS)}")
    needs_policy = rl.algorithm != "reward" or rl.reward.init == "policy"
    from pipeline.tasks import task_class, tasks_for_arch

    if needs_policy and not rl.policy_path and task_class(str(cfg.task.name)).auto_class != "AutoModelForCausalLM":
        raise ConfigError(f"rlhf={rl.algorithm} needs a causal LM policy: use task="
                          f"{'|'.join(tasks_for_arch('decoder'))} with a decoder model, "
                          f"or rlhf.policy_path=<run>/model")
    if rl.algorithm in ("grpo", "rloo"):
        batch = int(rl.trainer.per_device_train_batch_size) * int(rl.trainer.get("gradient_accumulation_steps", 1))
        if int(rl.generation.num_generations) < 2 or batch % int(rl.generation.num_generations):
            raise ConfigError(f"rlhf.generation.num_generations={rl.generation.num_generations} must be >= 2 and "
                              f"divide rlhf.trainer.per_device_train_batch_size x gradient_accumulation_steps "
                              f"({batch})")
    if "{prompt}" not in str(rl.data.prompt_template):
        raise ConfigError(f"rlhf.data.prompt_template={rl.data.prompt_template!r} has no {{prompt}}; e.g. "
                          f"rlhf.data.prompt_template='Question: {{prompt}} Answer:'")


def check_paths(cfg) -> None:
    """The model folders the stage starts from exist (pipeline.check.environment)."""
    from pipeline.rlhf.common import check_model_dir

    for key in ("policy_path", "reward_path"):
        if cfg.rlhf.get(key):
            check_model_dir(cfg.rlhf[key], key)


def run_steps(cfg, run_dir: Path, policy_path: str | None, run_data_source: str | None) -> dict:
    """Preference data -> reward model (reward, grpo, rloo) -> policy step. Returns rlhf_* metrics."""
    from pipeline.data.preference import chat_renderer, load_preferences
    from pipeline.rlhf.reward import load_reward, train_reward

    rl = cfg.rlhf
    validate(cfg)
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
        from pipeline.rlhf.policy import train_policy

        metrics.update(train_policy(cfg, prefs, policy_path, scorer, Path(run_dir) / "policy"))
    return metrics


def run_rlhf(r) -> dict:
    """The stage inside ``finetune``: the run's fine-tuned model is the policy (saved to <run>/sft/model)."""
    from pipeline.data.readers import infer_source
    from pipeline.rlhf.common import save_model, unwrap

    cfg = r.cfg
    policy_path = str(cfg.rlhf.policy_path) if cfg.rlhf.policy_path else None
    needs_policy = cfg.rlhf.algorithm != "reward" or cfg.rlhf.reward.init == "policy"
    if policy_path is None and needs_policy:
        policy_path = save_model(unwrap(r.trainer), r.tokenizer, Path(r.run_dir) / "sft" / "model")
    return run_steps(cfg, r.run_dir, policy_path, infer_source(cfg.data, r.task))


def run_alone(cfg, run_dir: Path) -> dict:
    """``finetune-rlhf``: only this stage, from ``rlhf.policy_path`` / ``rlhf.reward_path``; writes metrics.json."""
    import time

    from pipeline.paths import write_json_atomic
    from pipeline.rlhf.common import main_process

    if not cfg.get("rlhf"):
        raise ConfigError("finetune-rlhf needs rlhf=<reward|grpo|rloo|dpo|kto|orpo>")
    rl = cfg.rlhf
    if not rl.get("policy_path") and (rl.get("algorithm") != "reward" or rl.reward.get("init") == "policy"):
        raise ConfigError(f"finetune-rlhf rlhf={rl.get('algorithm')} needs rlhf.policy_path=<an earlier run>/model")
    from pipeline.config import resolve

    cfg = resolve(cfg, run_dir, stage="rlhf")  # as finetune does: learning rates x method.lr_scale, auto, ranges
    check_paths(cfg)
    rl = cfg.rlhf
    t0 = time.time()
    metrics = run_steps(cfg, Path(run_dir), str(rl.policy_path) if rl.policy_path else None, None)
    metrics["wall_seconds"] = time.time() - t0
    if main_process():
        write_json_atomic(Path(run_dir) / "metrics.json", metrics)
    return metrics
