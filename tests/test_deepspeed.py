"""DeepSpeed ZeRO-2 and ZeRO-3 (conf/accelerate/deepspeed-zero{2,3}.yaml, as users launch them on GPUs) on 2 CPU
processes: DeepSpeed's CPU accelerator over gloo. The decoder (gpt2-generation), full and LoRA, trains like one
process and model/ (gathered on rank 0: zero3_save_16bit_model) is the whole model and reloads.

Comparable to one process for the reasons in tests/test_fsdp.py (global batch 16 = the ranks' two micro-batches of
8 = the reference's two accumulation steps; dropout 0; packed causal-LM blocks). DeepSpeed reduces gradients in its
own buckets and steps its own AdamW (the Trainer's optimizer, wrapped); same tolerances as FSDP, measured maxima in
the printout. DeepSpeed JIT-builds a C++ op (deepspeed_shm_comm_op) the first time: ~2 min on this 2-core box, so
the build goes to a persistent cache (~/.cache/finetune-tests/torch_extensions) instead of the session's.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import ROOT, run_pipeline
from test_fsdp import COMMON, LOSS_RTOL, WEIGHT_ATOL, _job_key, _losses, _weights, launch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
EXTENSIONS = Path.home() / ".cache" / "finetune-tests" / "torch_extensions"


@pytest.fixture(scope="module")
def single_gpt2(tmp_path_factory):
    base = tmp_path_factory.mktemp("single-ds")
    out = {}
    for method in ("full", "lora"):
        run_pipeline(["recipe=gpt2-generation", f"method={method}", *COMMON,
                      "trainer.per_device_train_batch_size=8"], base / method)
        out[method] = base / method
    return out


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_two_cpu_processes_trains_like_one(stage, single_gpt2, tmp_path, monkeypatch):
    import transformers

    from pipeline.models.saved import load_model

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(EXTENSIONS))
    out = launch(["-m", "pipeline", "--multirun", "hydra.sweep.subdir=${hydra.job.num}", "recipe=gpt2-generation",
                  "method=full,lora", *COMMON, f"output_root={tmp_path}", "name=ds"],
                 config=ROOT / "conf" / "accelerate" / f"deepspeed-zero{stage}.yaml", timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = {_job_key(p.parent)[1]: p.parent for p in tmp_path.glob("multirun/ds/*/*/metrics.json")}
    assert sorted(jobs) == ["full", "lora"]
    for method, run_dir in jobs.items():
        m = json.loads((run_dir / "metrics.json").read_text())
        assert (m["distributed_type"], m["processes"], m["effective_batch_size"]) == ("DEEPSPEED", 2, 16)
        losses, ref = _losses(run_dir), _losses(single_gpt2[method])
        gap = max(abs(a - b) / abs(b) for a, b in zip(losses, ref))
        a, b = _weights(run_dir / "model"), _weights(single_gpt2[method] / "model")
        assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
        worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert len(losses) == len(ref) and gap < LOSS_RTOL and worst < WEIGHT_ATOL, (gap, worst, losses, ref)
        model = load_model(run_dir / "model") if method == "lora" else \
            transformers.GPT2LMHeadModel.from_pretrained(run_dir / "model")
        assert sum(p.numel() for p in model.parameters()) > 0
        print(f"ZeRO-{stage} {method}: loss max rel diff {gap:.1e}, weights max abs diff {worst:.1e}")
