"""``finetune`` / ``python -m pipeline``: one fine-tuning run (or a ``--multirun`` sweep of them) from the composed
config, through the stages of pipeline/stages/run.py, inside the shared app wrapper (pipeline/commands/app.py).

Imports stay light (hydra, omegaconf) until a run starts, so ``--help`` and ``--cfg job`` are fast. Errors the user
can fix (pipeline.errors.PipelineError) print one line and exit 2; ``debug_errors=true`` or HYDRA_FULL_ERROR=1 shows
the traceback instead.
"""

from __future__ import annotations

import sys

from pipeline.commands import help as fast_help
from pipeline.commands.app import hydra_app, launch
from pipeline.reports import console
from pipeline.util.paths import CONF_DIR


def finetune(cfg, run_dir, accept):
    from pipeline.stages.run import run  # torch, transformers, datasets: only once a run starts

    return run(cfg, run_dir, after_check=accept)


def _finish(cfg, metrics: dict, run_dir):
    console.finish(cfg, metrics, run_dir, metrics.get("hub_url"))  # summary table + one line, main process only
    return metrics.get(f"eval_{cfg.task.metric}")  # a sweep's objective: the validation metric, never a test one


_app = hydra_app(finetune, _finish)


def main() -> None:
    # --help without Hydra's per-group repository rebuilds (~3x faster)
    if fast_help.wants_help(sys.argv[1:]) and fast_help.print_help(sys.argv[1:], CONF_DIR):
        return
    launch(_app)


if __name__ == "__main__":
    main()
