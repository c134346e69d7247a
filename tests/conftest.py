"""Shared test setup: offline, one thread, quiet; helpers to compose configs and run the pipeline in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# Set before torch / transformers / datasets are imported by any test module.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", OMP_NUM_THREADS="1",
                  TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_PROGRESS_BARS="1",
                  HF_DATASETS_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error")


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home")
    os.environ["HF_HOME"] = str(home)
    os.environ["HF_DATASETS_CACHE"] = str(home / "datasets")
    os.environ["TORCH_EXTENSIONS_DIR"] = str(home / "torch_extensions")
    import torch

    torch.set_num_threads(1)
    from pipeline.training import peaks

    # The MFU denominator of every run here: this CPU's matmul peak on one thread, probed once per test process and
    # cached whatever the load (runs would otherwise re-probe while a parallel worker keeps the load high).
    peaks.write_cache({peaks.cpu_key(d, 1): peaks.measure_matmul(d, 1) for d in ("fp32", "bf16")})


def compose(overrides: list[str]):
    """The job config exactly as ``finetune <overrides>`` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from pipeline.commands.app import user_overrides

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=user_overrides(overrides))


def run_pipeline(overrides: list[str], run_dir: Path) -> dict:
    """Compose and run one job in this process (no Hydra run-dir handling): returns metrics."""
    from pipeline.stages.run import run

    run_dir.mkdir(parents=True, exist_ok=True)
    return run(compose(overrides), run_dir)


def run_cli(args: list[str], cwd: Path = ROOT, timeout: int = 300, env: dict | None = None):
    """Run ``python -m pipeline <args>`` in a subprocess (what a user types), with this checkout's ``pipeline``
    first on the path whatever ``cwd`` is (an installed copy elsewhere is not the code under test)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": path, **(env or {})})


needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")


# `python -c KILLER <step> <signal> <overrides>` (or the text as a script under accelerate launch): the real CLI,
# plus a callback that signals the process at <step>.
KILLER = """
import os, signal, sys
from transformers import TrainerCallback
import pipeline.training.trainer as train
step, sig = int(sys.argv.pop(1)), getattr(signal, sys.argv.pop(1))
class KillAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == step:
            os.kill(os.getpid(), sig)
build = train.build_trainer
def build_and_arm(*a, **kw):
    trainer = build(*a, **kw)
    trainer.add_callback(KillAt())
    return trainer
train.build_trainer = build_and_arm
sys.argv[0] = "finetune"
from pipeline.commands.finetune import main
main()
"""
