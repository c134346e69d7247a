"""The step-time levers on one task, measured with profile_step.py: bf16 autocast vs fp32, bf16 weights, batch size,
1 vs 2 threads, torch.compile; plus a torch.profiler breakdown of fp32 and bf16 steps. Every run is a fresh
process, the variants alternate over the repetitions, ratios are per repetition against fp32 on 1 thread.

  flock /tmp/heavy.lock python benchmarks/levers.py --task ner --reps 3        # -> results/step-profile.md
  python benchmarks/levers.py --variants fp32-t1 fp32-t2 autocast-t1 autocast-t2 --no-profile \
      --out benchmarks/results/step-threads.md                                  # threads alone, on an idle machine
  python benchmarks/levers.py --summarize /tmp/finetune-bench/levers             # tables from finished runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

VARIANTS = {  # name: profile_step.py flags
    "fp32-t1": ["--precision", "fp32", "--threads", "1"],
    "autocast-t1": ["--precision", "autocast", "--threads", "1"],
    "fp32-t2": ["--precision", "fp32", "--threads", "2"],
    "autocast-t2": ["--precision", "autocast", "--threads", "2"],
    "autocast-t1-b32": ["--precision", "autocast", "--threads", "1", "--batch", "32"],
    "fp32-t1-b32": ["--precision", "fp32", "--threads", "1", "--batch", "32"],
    "bf16w-t1": ["--precision", "bf16-weights", "--threads", "1"],
    "compile-fp32-t1": ["--precision", "fp32", "--threads", "1", "--compile"],
    "compile-autocast-t1": ["--precision", "autocast", "--threads", "1", "--compile"],
}
LABELS = {"fp32-t1": "fp32, 1 thread (reference)", "autocast-t1": "bf16 autocast (trainer.bf16=true), 1 thread",
          "fp32-t2": "fp32, 2 threads", "autocast-t2": "bf16 autocast, 2 threads",
          "autocast-t1-b32": "bf16 autocast, batch 32", "fp32-t1-b32": "fp32, batch 32",
          "bf16w-t1": "bf16 weights and optimizer states (no autocast)", "compile-fp32-t1": "torch.compile, fp32",
          "compile-autocast-t1": "torch.compile, bf16 autocast"}
STEPS = {"default": ["--steps", "48", "--warmup", "12"], "compile": ["--steps", "72", "--warmup", "36"]}


def run_all(task: str, reps: int, work: Path, names: list[str], profile: bool = True) -> None:
    work.mkdir(parents=True, exist_ok=True)
    for rep in range(reps):
        shift = (rep * 3) % len(names)
        for name in names[shift:] + names[:shift]:
            steps = STEPS["compile" if name.startswith("compile") else "default"]
            cmd = [sys.executable, str(ROOT / "benchmarks" / "profile_step.py"), "--task", task, *VARIANTS[name], *steps,
                   "--out", str(work / f"{name}-{rep}.json")]
            with open(work / f"{name}-{rep}.log", "w") as log:
                subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
            print(name, rep, flush=True)
    for p in ("fp32", "autocast") if profile else ():
        cmd = [sys.executable, str(ROOT / "benchmarks" / "profile_step.py"), "--task", task, "--precision", p,
               "--threads", "1", "--steps", "24", "--warmup", "8", "--profile", "6", "--out", str(work / f"profile-{p}.json")]
        with open(work / f"profile-{p}.log", "w") as log:
            subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)


def peak_of(peak_json: Path, dtype: str, threads: int) -> float | None:
    """The pipeline probe's figure (best of its two shapes) from benchmarks/peak.py's result, if there is one."""
    if not peak_json.is_file():
        return None
    figs = json.loads(peak_json.read_text())["figures"].get(f"{dtype}, {threads} thread(s)")
    return max(list(figs.values())[:2]) if figs else None


def summarize(work: Path, peak_json: Path) -> str:
    from tables import spread

    runs = {n: sorted(work.glob(f"{n}-[0-9]*.json")) for n in VARIANTS}
    data = {n: {int(p.stem.rsplit("-", 1)[1]): json.loads(p.read_text()) for p in ps} for n, ps in runs.items() if ps}
    ref = data.get("fp32-t1", {})
    first = next(iter(next(iter(data.values())).values()))
    lines = [f"# Where a training step goes, and the levers ({first['task']}, batch {first['batch']}, "
             f"{first['samples']} training rows)", "",
             "`python benchmarks/levers.py` — each run a fresh process (benchmarks/profile_step.py: the HF Trainer, "
             "recipe settings, shuffled length groups), steps after a warm-up only (compile: after 36 steps). "
             "Ratios per repetition against fp32 on 1 thread of the same repetition: median (IQR, n). MFU: model "
             "FLOP/s over the matmul peak of the run's dtype and threads (results/peak.md, best of its first two rows).", "",
             "| variant | tokens/s (median) | step ms | MFU | tokens/s vs fp32 1 thread | phases ms: batch / forward / backward / clip / optimizer / rest |",
             "|---|---|---|---|---|---|"]
    for name, reps in data.items():
        med = lambda k: sorted(r[k] for r in reps.values())[len(reps) // 2]
        ratio = [r["tokens_per_s"] / ref[i]["tokens_per_s"] for i, r in reps.items() if i in ref]
        ph = [r.get("phases_ms_median") for r in reps.values() if r.get("phases_ms_median")]
        phases = " / ".join(f"{sorted(p[k] for p in ph)[len(ph) // 2]:.0f}" for k in
                            ("batch", "forward", "backward", "clip", "optimizer", "rest")) if ph else "-"
        mfu = []
        for r in reps.values():
            peak = peak_of(peak_json, "fp32" if r["precision"] == "fp32" else "bf16", r["threads"]) or r.get("peak_flops")
            if peak and r.get("model_flops_per_s"):
                mfu.append(r["model_flops_per_s"] / peak)
        lines.append(f"| {LABELS.get(name, name)} | {med('tokens_per_s'):.0f} | {med('step_ms_median'):.0f} | "
                     f"{sorted(mfu)[len(mfu) // 2]:.3f} | {spread(ratio)['text'] if ratio else '-'} | {phases} |"
                     if mfu else f"| {LABELS.get(name, name)} | {med('tokens_per_s'):.0f} | {med('step_ms_median'):.0f} | - | "
                     f"{spread(ratio)['text'] if ratio else '-'} | {phases} |")
    for p in ("fp32", "autocast"):
        f = work / f"profile-{p}.json"
        if not f.is_file():
            continue
        prof = json.loads(f.read_text())
        cats = prof.get("self_cpu_ms_by_category", {})
        total = sum(cats.values()) or 1
        lines += ["", f"## Op breakdown, {LABELS[p + '-t1']} (torch.profiler, self CPU time over "
                  f"{prof.get('steps_measured', '?')} + 6 steps)", "", "| category | ms | share |", "|---|---|---|"]
        lines += [f"| {k} | {v:.0f} | {v / total:.0%} |" for k, v in cats.items()]
        lines += ["", "Top ops: " + ", ".join(f"{o['op']} {o['self_cpu_ms']:.0f} ms" for o in prof.get("top_ops", [])[:8])]
    return "\n".join(lines)


def main(argv=None):
    from run import positive_int

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="ner")
    p.add_argument("--reps", type=positive_int, default=3)
    p.add_argument("--work", default="/tmp/finetune-bench/levers")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="a subset (keep fp32-t1: the reference of every ratio)")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip the torch.profiler breakdown")
    p.add_argument("--summarize", default=None, help="only write the tables from the runs in this folder")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "step-profile.md"))
    args = p.parse_args(argv)
    work = Path(args.summarize or args.work)
    if not args.summarize:
        run_all(args.task, args.reps, work, args.variants, args.profile)
    text = summarize(work, Path(args.out).parent / "peak.json")
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
