"""The RLHF stage's checks before any heavy work: the config (``validate``, from the check stage when ``rlhf`` is set)
and the model folders it starts from (``check_paths``)."""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.rlhf.common import check_model_dir, uses_peft
from pipeline.tasks import task_class, tasks_for_arch

ALGORITHMS = ("reward", "grpo", "rloo", "dpo", "kto", "orpo")


def validate(cfg) -> None:
    """Checks of ``cfg.rlhf`` before any heavy work (pipeline/stages/check.py ``validate`` calls this once)."""
    rl = cfg.rlhf
    uses_peft(cfg)  # method=full or a LoRA method
    if rl.algorithm not in ALGORITHMS:
        raise ConfigError(f"rlhf.algorithm={rl.algorithm}: use one of {list(ALGORITHMS)}")
    needs_policy = rl.algorithm != "reward" or rl.reward.init == "policy"
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
    """The model folders the stage starts from exist (pipeline/stages/check.py ``environment``)."""
    for key in ("policy_path", "reward_path"):
        if cfg.rlhf.get(key):
            check_model_dir(cfg.rlhf[key], key)
