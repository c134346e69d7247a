"""The tasks added after the first three have what the others have: a LoRA run under 2-process DDP (gloo on CPU)
writes one run directory whose metrics (task metric and loss, validation and test) equal a 1-process evaluation of
the merged model, and ``finetune-export --merge`` of that adapter reproduces its outputs. (Extractive QA: tests/test_qa.py.)"""

from __future__ import annotations

import json

import pytest

from conftest import run_pipeline
from test_distributed import launch

RECIPES = {"bert-classification": ("eval_accuracy", "test_accuracy"),
           "t5-translation": ("eval_bleu", "test_bleu"),
           "t5-qa": ("eval_f1", "test_f1")}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_two_process_lora_run_scores_like_one_process_and_merges(recipe, tmp_path):
    from pipeline.export import merge

    ddp_dir = tmp_path / "ddp"
    out = launch(["-m", "pipeline", f"recipe={recipe}", "debug=smoke", "method=lora", "trainer.num_train_epochs=1",
                  "num_samples=0", f"hydra.run.dir={ddp_dir}"])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ddp = json.loads((ddp_dir / "metrics.json").read_text())
    assert ddp["world_size"] == 2 and ddp["trainable_params"] < ddp["total_params"]
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]  # both ranks wrote into one run directory
    merged, diff = merge(ddp_dir)
    assert (merged / "model.safetensors").is_file() and diff < 1e-4
    one = run_pipeline([f"recipe={recipe}", "debug=smoke", "model.init=pretrained", "do_train=false",
                        "num_samples=0", f"model.name_or_path={merged}"], tmp_path / "one")
    for key in RECIPES[recipe]:  # generated outputs / predicted labels: the same
        assert one[key] == pytest.approx(ddp[key], abs=1e-6), key
    for key in ("eval_loss", "test_loss"):  # merged weights: outputs within 1e-4 of the adapter's
        assert one[key] == pytest.approx(ddp[key], rel=1e-3), key
