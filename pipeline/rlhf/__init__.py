"""Optional RLHF stage (``rlhf=<option>``, conf/rlhf/) built on TRL 1.16's trainers.

    reward      RewardTrainer -> <run>/reward/model (sequence classifier, one score)
    grpo, rloo  reward model (trained here, or rlhf.reward_path) -> GRPOTrainer / RLOOTrainer -> <run>/policy/model
    dpo, kto, orpo   preference tuning on pairs -> <run>/policy/model

Stages hand results on through directories: the policy (and reference) is this run's fine-tuned model, saved to
<run>/sft/model, or ``rlhf.policy_path``; the reward model is <run>/reward/model or ``rlhf.reward_path``.
``finetune-rlhf`` (pipeline/commands/rlhf.py) runs this stage alone from such paths.
PPO no longer exists in TRL 1.16: GRPO / RLOO with a learned reward model is the RLHF path.

Modules: ``checks`` (config and model folders, before heavy work), ``steps`` (the stage's order), ``preference`` (the
pairs), ``reward``, ``policy``, ``evaluate`` (before / after measurements), ``common`` (TRL configs, saving). This
package file only hands the stage's names on.
"""

from pipeline.rlhf.checks import ALGORITHMS, check_paths, validate
from pipeline.rlhf.steps import run_steps

__all__ = ["ALGORITHMS", "check_paths", "run_steps", "validate"]
