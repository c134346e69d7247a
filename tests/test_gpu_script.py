"""benchmarks/gpu.py --dry-run: every GPU check's run composes and passes the pipeline's check stage on this CPU
(QLoRA's CUDA refusal is the expected outcome here), and both result files are written. CI never needs a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_gpu_script_dry_run_validates_every_check(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "benchmarks/gpu.py", "--dry-run", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    runs = result["runs"]
    assert result["meta"]["dry_run"] is True
    assert {r["check"] for r in runs.values()} == {"precision", "attention", "memory", "liger", "fsdp"}
    assert all(r["status"].startswith("validated") for r in runs.values()), runs
    assert "CUDA" in runs["gpt2-small-bf16-qlora"].get("error", "CUDA")  # refused on a CPU, or validated on a GPU
    md = (tmp_path / "gpu.md").read_text()
    assert md.count("| validated") == len(runs) and "bf16 / fp32 tokens/s" in md
