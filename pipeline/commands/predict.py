"""``finetune-predict RUN_DIR``: inference with the model of a finished run (full model or PEFT adapter).

The task, its settings and the model come from the run directory (``.hydra/config.yaml`` and ``model/``); the
inference itself is the task's (``Task.predict``, also what the evaluate stage's samples.jsonl uses), this module is
the command around it: inputs, model loading, outputs.

    finetune-predict outputs/bert-ner/<time> --text "Angela Merkel visited Paris."
    finetune-predict outputs/gpt2-generation/<time> --prompt "To be or not" --max-new-tokens 40 --seed 1
    finetune-predict outputs/t5-summarization/<time> --file dialogues.jsonl --out summaries.jsonl

A task whose inputs have several fields takes the others as options named after them (``--<field> TEXT``), e.g. a
question-answering run: ``--text "<question>" --context "<passage>"``; ``finetune-predict RUN --help`` lists them.
Imports stay light until a model is loaded: ``--help`` does not import torch.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.commands import one_line_errors
from pipeline.config import typecheck
from pipeline.errors import ConfigError, DataError, ModelError
from pipeline.infra.rundir import unwritable_reason


# -- a run directory -> task, model, tokenizer -------------------------------------------------------------------
def resolve_run(path) -> tuple[Path, Path]:
    """(run directory, model directory) of a finished run; accepts the run dir or its model/ folder."""
    path = Path(path).expanduser()
    run_dir = path.parent if path.name == "model" else path
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        why = "no such directory" if not run_dir.exists() else "no .hydra/config.yaml in it"
        raise ConfigError(f"{path}: not a run directory ({why}); give a finished run, e.g. outputs/<name>/<time>")
    model_dir = run_dir / "model"
    if not ((model_dir / "config.json").is_file() or (model_dir / "adapter_config.json").is_file()):
        status = run_dir / "status.json"
        state = json.loads(status.read_text()).get("status", "?") if status.is_file() else "unknown"
        raise ConfigError(f"{run_dir}: the run has no saved model/ (status: {state}); predict needs a completed run")
    return run_dir, model_dir


def run_task(run_dir: Path):
    """The task object of a run, from its saved config (no model loaded)."""
    from pipeline.tasks import get_task  # datasets + every task module: not for --help or a bad path

    cfg = OmegaConf.load(Path(run_dir) / ".hydra" / "config.yaml")
    return get_task(cfg)


WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


class Predictor:
    """The model of one run, ready to predict for its task."""

    def __init__(self, run_dir, device: str | None = None):
        self.run_dir, self.model_dir = resolve_run(run_dir)
        self.task = run_task(self.run_dir)
        self.cfg = self.task.cfg
        self.tokenizer, self.model = self._load(device)

    def _load(self, device):
        if not any((self.model_dir / w).is_file() for w in WEIGHTS):
            raise ModelError(f"{self.model_dir}: no weights in it ({' / '.join(WEIGHTS)}): the model folder is "
                             f"incomplete (copied in part?); copy the whole model/ folder of the run, or rerun it")
        import torch  # torch, transformers: only once a model is loaded (--help and bad inputs stay fast)
        import transformers
        from safetensors import SafetensorError

        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir)
            if (self.model_dir / "adapter_config.json").is_file():
                from pipeline.models.saved import NOT_MERGEABLE, load_model  # peft: only for adapter runs

                model = load_model(self.model_dir)  # PeftModel over its base (base/ holds the head's labels)
                if model.active_peft_config.peft_type not in NOT_MERGEABLE:
                    model = model.merge_and_unload()  # plain model: faster, and pipelines know its class
            else:
                model = getattr(transformers, self.task.auto_class).from_pretrained(self.model_dir)
        except (OSError, ValueError, KeyError, SafetensorError) as e:  # a damaged or partly copied model/ folder
            raise ModelError(f"{self.model_dir}: cannot load the run's model ({type(e).__name__}: "
                             f"{(str(e).splitlines() or [''])[0][:200]}); copy the whole model/ folder of the run, "
                             f"or rerun it") from None
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return tokenizer, model.to(device).eval()

    def predict(self, inputs: list, batch_size: int = 8, progress: bool = False, seed: int | None = None,
                generation: dict | None = None, **options) -> list:
        """One output per input: a dict of the task's ``input_fields``, or a string for the first one.
        ``generation``: overrides of the run's generation settings (None values ignored); ``options``: the task's
        own (e.g. ``aggregation`` for word tagging)."""
        if seed is not None:
            import transformers

            transformers.set_seed(seed)
        first = self.task.input_fields[0]
        rows = [r if isinstance(r, dict) else {first: r} for r in inputs]
        return self.task.predict(self.model, self.tokenizer, rows, batch_size=batch_size, progress=progress,
                                 generation=generation, **options)


# -- inputs and outputs --------------------------------------------------------------------------------------------
def _column(rows: list[dict], field: str, aliases: tuple, chosen: str | None, path: str) -> str:
    names = [chosen] if chosen else [field, *aliases]
    found = next((n for n in names if n in rows[0]), None)
    if found is None:
        raise DataError(f"--file {path}: no column {' / '.join(names)}; its columns are {sorted(rows[0])}; pick one "
                        f"with --column")
    return found


def read_inputs(path: str, task, column: str | None) -> list[dict]:
    """Rows of a .jsonl / .json / .csv / .txt file (.txt: one input per line) with ``_input``: a dict of the task's
    input fields (the first read from ``column`` when given)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"--file {path}: file not found")
    try:
        if p.suffix in (".jsonl", ".json"):
            text = p.read_text(encoding="utf-8-sig")
            try:
                rows = json.loads(text) if text.lstrip().startswith("[") else \
                    [json.loads(l) for l in text.splitlines() if l.strip()]
            except json.JSONDecodeError as e:
                raise DataError(f"--file {path}: not JSON lines nor a JSON list ({e})") from e
            if not all(isinstance(r, dict) for r in rows):
                raise DataError(f"--file {path}: each line (or list item) must be a JSON object with an input column")
        elif p.suffix == ".csv":
            with open(p, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        else:
            first = task.input_fields[0]
            rows = [{first: l} for l in p.read_text(encoding="utf-8-sig").splitlines() if l.strip()]
    except UnicodeDecodeError as e:
        raise DataError(f"--file {path}: not UTF-8 text ({e.reason} at byte {e.start}); convert it, e.g. "
                        f"iconv -f latin1 -t utf-8") from None
    if not rows:
        raise DataError(f"--file {path}: no inputs in it")
    optional = set(task.optional_input_fields)
    sources = {f: _column(rows, f, tuple(task.input_aliases.get(f, ())), column if i == 0 else None, path)
               for i, f in enumerate(task.input_fields)
               if f not in optional or any(n in rows[0] for n in (f, *task.input_aliases.get(f, ())))}
    for n, row in enumerate(rows, 1):
        for f, src in sources.items():
            value = row.get(src)
            ok = isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))
            if not ok:
                what = f"no column '{src}'" if src not in row else \
                    f"{'null' if value is None else repr(value)[:40]} in column '{src}'"
                raise DataError(f"--file {path}: input {n} has {what}; every input needs text there")
        row["_input"] = {f: row[src] for f, src in sources.items()}
    return rows


def write_outputs(rows: list[dict], path: str | None) -> None:
    if path is None:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    with open(Path(path).expanduser(), "w", newline="", encoding="utf-8") as f:
        if path.endswith(".csv"):
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                              for k, v in r.items()} for r in rows)
        else:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"wrote {len(rows)} predictions to {path}", file=sys.stderr)


# -- CLI ---------------------------------------------------------------------------------------------------------
def build_parser(task=None) -> argparse.ArgumentParser:
    """The command's options; with a run's ``task``, also one ``--<field>`` per extra input field of that task."""
    p = argparse.ArgumentParser(prog="finetune-predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n\n")[2].splitlines()))
    p.add_argument("run_dir", help="a finished run directory (outputs/<name>/<time>) or its model/ folder")
    src = p.add_argument_group("input (one of)")
    src.add_argument("--text", "--prompt", action="append", dest="texts", metavar="TEXT",
                     help="an input (sentence, prompt, document, question: the task's first input field); repeatable")
    src.add_argument("--file", help="batch input: .jsonl/.json/.csv (column: --column) or .txt (one per line)")
    src.add_argument("--column", help="the --file column holding the first input field (default: its name)")
    if task is not None:
        for field in task.input_fields[1:]:
            src.add_argument(f"--{field.replace('_', '-')}", action="append", dest=f"field_{field}",
                             metavar="TEXT", help=f"the {field} of each --text (one, or one per --text)"
                             + (" (optional)" if field in task.optional_input_fields else ""))
    p.add_argument("--out", help="output file (.jsonl or .csv); default: JSON lines on stdout")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("generation (defaults: the run's task.generation)")
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--do-sample", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--num-beams", type=int)
    g.add_argument("--length-penalty", type=float)
    g.add_argument("--no-repeat-ngram-size", type=int)
    g.add_argument("--seed", type=int, help="seed for sampling (reproducible generations)")
    if task is not None and task.cli_options:
        own = p.add_argument_group(f"{task.name} options")
        for name, kwargs in task.cli_options.items():
            own.add_argument(f"--{name.replace('_', '-')}", dest=f"option_{name}", **kwargs)
    return p


def _text_rows(args, task) -> list[dict]:
    """--text values (+ one value per extra field, or one per --text) -> input rows."""
    rows = [{task.input_fields[0]: t} for t in args.texts]
    for field in task.input_fields[1:]:
        values = getattr(args, f"field_{field}", None) or []
        if not values and field in task.optional_input_fields:
            continue
        if len(values) not in (1, len(rows)):
            raise ConfigError(f"give --{field.replace('_', '-')} once (for every --text) or once per --text "
                              f"({len(rows)}), not {len(values)} times")
        if not values:
            raise ConfigError(f"this run's task reads {' + '.join(task.input_fields)}: give --{field} TEXT "
                              f"with --text, or a --file with those columns")
        for row, value in zip(rows, values * len(rows) if len(values) == 1 else values):
            row[field] = value
    return [{**r, "_input": dict(r)} for r in rows]


def check_args(args, gen: dict) -> None:
    """The command's own values, before a model is loaded: one line each (exit 2), no traceback."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size={args.batch_size} must be >= 1")
    if args.seed is not None and not 0 <= args.seed < 2 ** 32:
        raise ConfigError(f"--seed={args.seed} must be in [0, 2**32)")
    try:
        typecheck.generation({k: v for k, v in gen.items() if v is not None}, "--")
    except ConfigError as e:
        raise ConfigError(re.sub(r"--(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), str(e))) from None
    if args.device:
        import torch  # only when a device is named

        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise ConfigError(f"--device={args.device}: not a device; use cpu, cuda or cuda:<index>") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device={args.device}: no CUDA device is visible here; use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device={args.device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if args.out:
        out = Path(args.out).expanduser()
        why = "it is a folder" if out.is_dir() else unwritable_reason(out.parent)
        if why:
            raise ConfigError(f"--out {args.out}: cannot write there ({why}); give a writable .jsonl or .csv path")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    first, _ = build_parser().parse_known_args(argv)
    with one_line_errors():
        for key, value in (("TOKENIZERS_PARALLELISM", "false"), ("TRANSFORMERS_VERBOSITY", "error"),
                           ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):  # our own progress bar is the one that counts
            os.environ.setdefault(key, value)
        run_dir, _ = resolve_run(first.run_dir)  # a bad path fails here, before torch is imported
        task = run_task(run_dir)
        args = build_parser(task).parse_args(argv)  # the task's own input options are known now
        if bool(args.texts) == bool(args.file):
            raise ConfigError("give --text/--prompt (repeatable) or --file, not both and not neither")
        gen = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample, "temperature": args.temperature,
               "top_p": args.top_p, "top_k": args.top_k, "num_beams": args.num_beams,
               "length_penalty": args.length_penalty, "no_repeat_ngram_size": args.no_repeat_ngram_size}
        check_args(args, gen)
        rows = read_inputs(args.file, task, args.column) if args.file else _text_rows(args, task)
        # stdout carries the predictions only: what libraries print while loading goes to stderr (transformers
        # prints "[INFO] Running in WANDB offline mode" at import when WANDB_MODE=offline)
        with contextlib.redirect_stdout(sys.stderr):
            predictor = Predictor(run_dir, device=args.device)
        quiet = args.quiet or os.environ.get("FINETUNE_QUIET") == "1"
        options = {name: getattr(args, f"option_{name}") for name in task.cli_options}
        preds = predictor.predict([r.pop("_input") for r in rows], batch_size=args.batch_size, progress=not quiet,
                                  seed=args.seed, generation=gen, **options)
    field = task.output_field
    try:
        write_outputs([{**row, field: pred} for row, pred in zip(rows, preds)], args.out)
    except BrokenPipeError:  # stdout piped into `head` and closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
