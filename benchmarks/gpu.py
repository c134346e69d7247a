"""The GPU checks, one call on a machine with 1+ CUDA GPUs (< 10 min on one H100/H200-class GPU), results in
``--out`` as gpu.json (every run's figures) + gpu.md (the tables). Models are built from config (no Hub): GPT-2-small
(768 wide, 12 layers, 12 heads) and T5-small (512 wide, 6+6 layers, 8 heads) sizes through ``model.init=scratch``.

    python benchmarks/gpu.py --out benchmarks/results/gpu            # on the GPU machine
    python benchmarks/gpu.py --dry-run --out /tmp/gpu-dry            # any machine: composes and validates every check

Checks (each a real ``python -m pipeline`` run, or ``accelerate launch`` for FSDP; the run's metrics.json gives
the figures):
  precision   bf16 vs fp32: tokens/s and MFU, GPT-2-small and T5-small
  attention   SDPA vs eager attention (GPT-2-small, bf16)
  memory      peak GPU memory per method: full / LoRA / QLoRA (bitsandbytes; skipped where not installed)
  liger       Liger's fused linear cross-entropy (trainer.use_liger_kernel=true; skipped where not installed)
  fsdp        FSDP2 + LoRA on the GPUs present (conf/accelerate/fsdp.yaml): saves checkpoint-N, a second run
              resumes from it and ends at the straight run's loss
``--dry-run`` composes each run's config and runs the pipeline's check stage on it (types, ranges, cross-field
checks, the method's refusals), checks the launcher config and writes both result files with the planned runs; a
GPU-only refusal (QLoRA needs CUDA) is the expected outcome on a CPU and is recorded as such. CI runs it
(tests/test_gpu_script.py); nothing in CI needs a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GPT2_SMALL = ["recipe=gpt2-generation", "debug=smoke", "model.scratch.vocab_size=50257", "model.scratch.hidden_size=768",
              "model.scratch.num_layers=12", "model.scratch.num_heads=12", "model.scratch.intermediate_size=3072",
              "model.scratch.max_positions=1024", "task.block_size=512", "data.synthetic.num_train=2048"]
T5_SMALL = ["recipe=t5-summarization", "debug=smoke", "model.scratch.vocab_size=32128", "model.scratch.hidden_size=512",
            "model.scratch.num_layers=6", "model.scratch.num_heads=8", "model.scratch.intermediate_size=2048",
            "data.synthetic.num_train=2048"]
STEPS = 40  # after the first steps (allocator warm-up, kernel selection), enough for a stable tokens/s
TIMED = ["trainer.per_device_train_batch_size=16", "trainer.global_batch_size=16", f"trainer.max_steps={STEPS}",
         "trainer.logging_steps=10", "trainer.save_strategy=no", "trainer.load_best_model_at_end=false",
         "do_eval=false", "num_samples=0"]
BF16, FP32 = ["trainer.bf16=true"], ["trainer.bf16=false", "trainer.tf32=false"]
FSDP_STEPS, FSDP_SAVE = 20, 10
FSDP_RUN = GPT2_SMALL + BF16 + ["method=lora", "trainer.per_device_train_batch_size=8", "trainer.global_batch_size=16",
                                f"trainer.max_steps={FSDP_STEPS}", "trainer.logging_steps=1",
                                "trainer.save_strategy=steps", f"+trainer.save_steps={FSDP_SAVE}",
                                "trainer.load_best_model_at_end=false", "do_eval=false", "num_samples=0",
                                "model.scratch.dropout=0.0", "++method.lora_dropout=0.0",
                                "trainer.train_sampling_strategy=random"]
FIGURES = ("train_processed_tokens_per_second", "train_model_flops_per_second", "mfu", "peak_gpu_mem_mb", "train_loss",
           "trainable_params", "total_params", "distributed_type", "processes", "parameters_sharded")


def runs() -> list[dict]:
    """Every run of every check: name, check, overrides, what it needs (a package), how it is launched."""
    out = []
    for model, base in (("gpt2-small", GPT2_SMALL), ("t5-small", T5_SMALL)):
        for prec, flags in (("fp32", FP32), ("bf16", BF16)):
            out.append(dict(name=f"{model}-{prec}", check="precision", overrides=base + TIMED + flags))
    out.append(dict(name="gpt2-small-bf16-eager", check="attention",
                    overrides=GPT2_SMALL + TIMED + BF16 + ["model.attn_implementation=eager"]))
    for method, needs in (("lora", None), ("qlora", "bitsandbytes")):
        out.append(dict(name=f"gpt2-small-bf16-{method}", check="memory", needs=needs, gpu_only=method == "qlora",
                        overrides=GPT2_SMALL + TIMED + BF16 + [f"method={method}"]))
    out.append(dict(name="gpt2-small-bf16-liger", check="liger", needs="liger_kernel",
                    overrides=GPT2_SMALL + TIMED + BF16 + ["+trainer.use_liger_kernel=true"]))
    out.append(dict(name="fsdp-lora-straight", check="fsdp", launcher="fsdp", overrides=FSDP_RUN))
    out.append(dict(name="fsdp-lora-resumed", check="fsdp", launcher="fsdp", resume_from="fsdp-lora-straight",
                    overrides=FSDP_RUN))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(run: dict, run_dir: Path, out: Path) -> list[str]:
    overrides = list(run["overrides"])
    if run.get("resume_from"):  # a fresh directory resuming from the straight run's checkpoint-FSDP_SAVE
        overrides.append(f"resume={out / 'runs' / run['resume_from'] / 'checkpoints' / f'checkpoint-{FSDP_SAVE}'}")
    overrides.append(f"hydra.run.dir={run_dir}")
    if run.get("launcher") == "fsdp":
        import torch

        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "conf" / "accelerate" / "fsdp.yaml"), "--num_processes", str(max(torch.cuda.device_count(), 1)),
                "--main_process_port", str(_free_port()), "-m", "pipeline", *overrides]
    return [sys.executable, "-m", "pipeline", *overrides]


def validate(run: dict, tmp: Path) -> dict:
    """Dry run: compose the run's config as the CLI does and run the pipeline's check stage on it."""
    from hydra import compose, initialize_config_dir

    from pipeline.commands.app import user_overrides
    from pipeline.errors import PipelineError
    from pipeline.stages.run import Run, check_stage

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=user_overrides(run["overrides"]))
    if run.get("launcher") == "fsdp" and not (ROOT / "conf" / "accelerate" / "fsdp.yaml").is_file():
        return {"status": "invalid", "error": "conf/accelerate/fsdp.yaml is missing"}
    try:
        check_stage(Run(cfg=cfg, run_dir=tmp / run["name"]))
    except PipelineError as e:
        if run.get("gpu_only") and ("GPU" in str(e) or "CUDA" in str(e)):
            return {"status": "validated (refused on this CPU as expected)", "error": str(e)}
        return {"status": "invalid", "error": str(e)}
    return {"status": "validated"}


def execute(run: dict, out: Path, timeout: int) -> dict:
    if run.get("needs") and importlib.util.find_spec(run["needs"]) is None:
        return {"status": "skipped", "error": f"{run['needs']} is not installed"}
    run_dir = out / "runs" / run["name"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "HF_HUB_OFFLINE": "1"}
    t = time.time()
    try:
        p = subprocess.run(command(run, run_dir, out), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                           env=env)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout} s", "wall_s": time.time() - t}
    result = {"wall_s": round(time.time() - t, 1)}
    if p.returncode != 0 or not (run_dir / "metrics.json").is_file():
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {**result, "status": "failed", "error": " | ".join(tail)[-600:]}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result.update(status="ok", **{k: metrics[k] for k in FIGURES if k in metrics})
    history = json.loads((run_dir / "log_history.json").read_text())
    result["losses"] = {h["step"]: h["loss"] for h in history if "loss" in h}
    return result


def summary(results: dict) -> list[str]:
    """gpu.md: one table of every run, then the comparisons each check is for."""
    lines = ["# GPU checks (benchmarks/gpu.py)", "",
             "| run | check | status | tokens/s | MFU | peak GPU MB | train loss | note |", "|---|---|---|---|---|---|---|---|"]

    def f(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    for name, r in results.items():
        lines.append(f"| {name} | {r['check']} | {r['status']} | {f(r.get('train_processed_tokens_per_second'), '.0f')} | "
                     f"{f(r.get('mfu'), '.3f')} | {f(r.get('peak_gpu_mem_mb'), '.0f')} | {f(r.get('train_loss'), '.4f')} | "
                     f"{(r.get('error') or '')[:120]} |")

    def ratio(a, b, key="train_processed_tokens_per_second"):
        x, y = results.get(a, {}).get(key), results.get(b, {}).get(key)
        return f"{x / y:.2f}x" if x and y else "not measured"

    lines += ["", f"- bf16 / fp32 tokens/s: GPT-2-small {ratio('gpt2-small-bf16', 'gpt2-small-fp32')}, "
              f"T5-small {ratio('t5-small-bf16', 't5-small-fp32')}",
              f"- SDPA / eager tokens/s (GPT-2-small bf16): {ratio('gpt2-small-bf16', 'gpt2-small-bf16-eager')}",
              f"- Liger / plain tokens/s: {ratio('gpt2-small-bf16-liger', 'gpt2-small-bf16')}; peak memory Liger / "
              f"plain: {ratio('gpt2-small-bf16-liger', 'gpt2-small-bf16', 'peak_gpu_mem_mb')}",
              f"- peak GPU memory LoRA / full: {ratio('gpt2-small-bf16-lora', 'gpt2-small-bf16', 'peak_gpu_mem_mb')}, "
              f"QLoRA / full: {ratio('gpt2-small-bf16-qlora', 'gpt2-small-bf16', 'peak_gpu_mem_mb')}"]
    straight, resumed = results.get("fsdp-lora-straight", {}), results.get("fsdp-lora-resumed", {})
    if straight.get("losses") and resumed.get("losses"):
        a, b = straight["losses"].get(FSDP_STEPS), resumed["losses"].get(FSDP_STEPS)
        lines.append(f"- FSDP2 + LoRA on {straight.get('processes')} GPU(s): loss at step {FSDP_STEPS} straight "
                     f"{a:.5f}, resumed from checkpoint-{FSDP_SAVE} {b:.5f} (|diff| {abs(a - b):.1e})")
    else:
        lines.append("- FSDP2 + LoRA save / resume: not measured")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu")
    ap.add_argument("--dry-run", action="store_true", help="compose and validate every check (any machine)")
    ap.add_argument("--only", nargs="*", help="checks to run (precision attention memory liger fsdp)")
    ap.add_argument("--timeout", type=int, default=150, help="seconds per run")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    plan = [r for r in runs() if not args.only or r["check"] in args.only]
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA GPU visible: run this on a GPU machine, or --dry-run to check the script here",
                  file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results, t0 = {}, time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for r in plan:
            result = validate(r, Path(tmp)) if args.dry_run else execute(r, args.out, args.timeout)
            results[r["name"]] = {"check": r["check"], "overrides": r["overrides"], **result}
            print(f"{r['name']}: {result['status']} {result.get('error', '')}"[:200], flush=True)
    meta = {"dry_run": args.dry_run, "seconds": round(time.time() - t0, 1), "steps": STEPS}
    if not args.dry_run:
        import torch

        meta.update(gpus=torch.cuda.device_count(), gpu=torch.cuda.get_device_name(0), torch=torch.__version__)
    (args.out / "gpu.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=1))
    (args.out / "gpu.md").write_text("\n".join(summary(results) + ["", f"meta: {json.dumps(meta)}", ""]))
    bad = [n for n, r in results.items() if r["status"] in ("invalid", "failed")]
    print(f"{len(results)} runs, {len(bad)} failed/invalid: {bad}; results in {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
