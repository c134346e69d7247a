"""``finetune-predict RUN_DIR``: inference with the model of a finished run (full model or PEFT adapter).

The task, its settings (NER max length, summarization prefix, generation defaults) and the model come from the run
directory: ``.hydra/config.yaml`` and ``model/``. The three predict functions below are also what the evaluate
stage uses for its samples (tasks' ``samples()``), so samples.jsonl and this command decode the same way.

    finetune-predict outputs/bert-ner/<time> --text "Angela Merkel visited Paris."
    finetune-predict outputs/gpt2-generation/<time> --prompt "To be or not" --max-new-tokens 40 --seed 1
    finetune-predict outputs/t5-summarization/<time> --file dialogues.jsonl --out summaries.jsonl

Imports stay light until a model is loaded: ``--help`` does not import torch.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from pipeline.errors import ConfigError, DataError, PipelineError

INPUT_COLUMNS = {"ner": ("text", "sentence", "tokens"), "generation": ("prompt", "text"),
                 "summarization": ("document", "dialogue", "text")}
OUTPUT_FIELD = {"ner": "entities", "generation": "completion", "summarization": "summary"}


# -- shared inference (also used by tasks' samples()) ------------------------------------------------------------
def _batches(items: list, size: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    starts = range(0, len(items), size)
    bar = tqdm(starts, desc=desc, unit="batch", disable=not progress or len(starts) < 2, file=sys.stderr)
    for i in bar:
        yield items[i:i + size]


def predict_entities(model, tokenizer, texts: list[str], max_length: int = 512, batch_size: int = 16,
                     aggregation: str = "first", progress: bool = False) -> list[list[dict]]:
    """Entity spans per text: ``{"entity", "word", "start", "end", "score"}`` with ``text[start:end] == word``.
    Sub-word predictions are aggregated by the token-classification pipeline (``first``: a word takes the label of
    its first sub-word, the one trained on); texts longer than the model's window are read in overlapping chunks."""
    from transformers import pipeline

    limit = getattr(model.config, "max_position_embeddings", None) or max_length
    tokenizer.model_max_length = min(int(max_length), int(limit))
    nlp = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy=aggregation,
                   device=model.device, stride=tokenizer.model_max_length // 4)
    out = []
    with warnings.catch_warnings():  # byte-level BPE has no "##" marks: the pipeline says it uses a heuristic
        warnings.filterwarnings("ignore", message="Tokenizer does not support real words")
        for chunk in _batches(texts, batch_size, progress, "ner"):
            for text, ents in zip(chunk, nlp(chunk, batch_size=batch_size)):
                out.append([{"entity": e["entity_group"], "word": text[e["start"]:e["end"]], "start": int(e["start"]),
                             "end": int(e["end"]), "score": round(float(e["score"]), 4)} for e in ents])
    return out


def generate_from_ids(model, tokenizer, input_ids: list[list[int]], gen: dict, batch_size: int = 8,
                      progress: bool = False) -> list[str]:
    """Decoder LM: continue each prompt (token ids), left-padded batches; returns only the new text."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    rows = [ids or [start] for ids in input_ids]  # an empty prompt starts from BOS
    out = []
    for chunk in _batches(rows, batch_size, progress, "generate"):
        width = max(len(r) for r in chunk)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in chunk], device=model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in chunk], device=model.device)
        with torch.no_grad():
            seq = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **gen)
        out.extend(tokenizer.batch_decode(seq[:, width:], skip_special_tokens=True))
    return out


def generate_texts(model, tokenizer, prompts: list[str], gen: dict, batch_size: int = 8,
                   progress: bool = False) -> list[str]:
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    return generate_from_ids(model, tokenizer, ids, gen, batch_size, progress)


def summarize(model, tokenizer, documents: list[str], prefix: str, gen: dict, max_source_length: int = 512,
              batch_size: int = 8, progress: bool = False) -> list[str]:
    """Encoder-decoder: ``prefix + document`` (truncated to ``max_source_length``) -> generated summary."""
    import torch

    out = []
    for chunk in _batches(documents, batch_size, progress, "summarize"):
        enc = tokenizer([prefix + d for d in chunk], max_length=int(max_source_length), truncation=True,
                        padding=True, return_tensors="pt").to(model.device)
        with torch.no_grad():
            seq = model.generate(**enc, **gen)
        out.extend(t.strip() for t in tokenizer.batch_decode(seq, skip_special_tokens=True))
    return out


# -- a run directory -> task, model, tokenizer -------------------------------------------------------------------
def resolve_run(path) -> tuple[Path, Path]:
    """(run directory, model directory) of a finished run; accepts the run dir or its model/ folder."""
    path = Path(path)
    run_dir = path.parent if path.name == "model" else path
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        why = "no such directory" if not run_dir.exists() else "no .hydra/config.yaml in it"
        raise ConfigError(f"{path}: not a run directory ({why}); give a finished run, e.g. outputs/<name>/<time>")
    model_dir = run_dir / "model"
    if not ((model_dir / "config.json").is_file() or (model_dir / "adapter_config.json").is_file()):
        import json

        status = run_dir / "status.json"
        state = json.loads(status.read_text()).get("status", "?") if status.is_file() else "unknown"
        raise ConfigError(f"{run_dir}: the run has no saved model/ (status: {state}); predict needs a completed run")
    return run_dir, model_dir


class Predictor:
    """The model of one run, ready to predict for its task."""

    def __init__(self, run_dir, device: str | None = None):
        from omegaconf import OmegaConf

        self.run_dir, self.model_dir = resolve_run(run_dir)
        self.cfg = OmegaConf.load(self.run_dir / ".hydra" / "config.yaml")
        self.task_name = str(self.cfg.task.name)
        if self.task_name not in OUTPUT_FIELD:
            raise ConfigError(f"{self.run_dir}: task {self.task_name} has no predict support")
        self.tokenizer, self.model = self._load(device)

    def _load(self, device):
        import torch
        import transformers

        from pipeline.tasks import get_task

        self.task = get_task(self.cfg)
        tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir)
        if (self.model_dir / "adapter_config.json").is_file():
            from pipeline.export import NOT_MERGEABLE, load_model

            model = load_model(self.model_dir)  # PeftModel over its base (base/ holds the head's labels)
            if model.active_peft_config.peft_type not in NOT_MERGEABLE:
                model = model.merge_and_unload()  # plain model: faster, and pipelines know its class
        else:
            model = getattr(transformers, self.task.auto_class).from_pretrained(self.model_dir)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return tokenizer, model.to(device).eval()

    def generation_settings(self, overrides: dict) -> dict:
        from omegaconf import OmegaConf

        gen = OmegaConf.to_container(self.cfg.task.get("generation") or {}, resolve=True)
        gen.update({k: v for k, v in overrides.items() if v is not None})
        if not gen.get("do_sample", False):  # greedy / beam search: drop the sampling knobs (transformers warns)
            for key in ("temperature", "top_p", "top_k"):
                gen.pop(key, None)
        return gen

    def predict(self, texts: list[str], batch_size: int = 8, progress: bool = False, seed: int | None = None,
                aggregation: str = "first", **gen) -> list:
        t = self.cfg.task
        if self.task_name == "ner":
            return predict_entities(self.model, self.tokenizer, texts, int(t.max_length), batch_size, aggregation,
                                    progress)
        if seed is not None:
            import transformers

            transformers.set_seed(seed)
        settings = self.generation_settings(gen)
        if self.task_name == "generation":
            return generate_texts(self.model, self.tokenizer, texts, settings, batch_size, progress)
        return summarize(self.model, self.tokenizer, texts, self.task.prefix, settings, int(t.max_source_length),
                         batch_size, progress)


# -- CLI ---------------------------------------------------------------------------------------------------------
def read_inputs(path: str, task: str, column: str | None) -> list[dict]:
    """Rows of a .jsonl / .json / .csv / .txt file (.txt: one input per line) as dicts holding ``_input``."""
    import csv
    import json

    p = Path(path)
    if not p.is_file():
        raise DataError(f"--file {path}: file not found")
    if p.suffix in (".jsonl", ".json"):
        text = p.read_text(encoding="utf-8")
        try:
            rows = json.loads(text) if text.lstrip().startswith("[") else \
                [json.loads(l) for l in text.splitlines() if l.strip()]
        except json.JSONDecodeError as e:
            raise DataError(f"--file {path}: not JSON lines nor a JSON list ({e})") from e
        if not all(isinstance(r, dict) for r in rows):
            raise DataError(f"--file {path}: each line (or list item) must be a JSON object with an input column")
    elif p.suffix == ".csv":
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [{"text": l} for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]
    if not rows:
        raise DataError(f"--file {path}: no inputs in it")
    candidates = INPUT_COLUMNS.get(task, ("text",))
    names = [column] if column else [c for c in candidates if c in rows[0]]
    if not names or names[0] not in rows[0]:
        raise DataError(f"--file {path}: no column {column or ' / '.join(candidates)}; its columns are "
                        f"{sorted(rows[0])}; pick one with --column")
    for row in rows:
        value = row[names[0]]
        row["_input"] = " ".join(value) if isinstance(value, list) else str(value)  # NER tokens -> text
    return rows


def write_outputs(rows: list[dict], path: str | None) -> None:
    import csv
    import json

    if path is None:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        if path.endswith(".csv"):
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: json.dumps(v, ensure_ascii=False) if isinstance(v, list) else v
                              for k, v in r.items()} for r in rows)
        else:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"wrote {len(rows)} predictions to {path}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="finetune-predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n\n")[2].splitlines()))
    p.add_argument("run_dir", help="a finished run directory (outputs/<name>/<time>) or its model/ folder")
    src = p.add_argument_group("input (one of)")
    src.add_argument("--text", "--prompt", action="append", dest="texts", metavar="TEXT",
                     help="an input text (NER sentence, generation prompt, document); repeatable")
    src.add_argument("--file", help="batch input: .jsonl/.json/.csv (column: --column) or .txt (one per line)")
    src.add_argument("--column", help="input column of --file (default: text/sentence/tokens, prompt/text, "
                                      "document/dialogue/text)")
    p.add_argument("--out", help="output file (.jsonl or .csv); default: JSON lines on stdout")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("generation / summarization (defaults: the run's task.generation)")
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--do-sample", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--num-beams", type=int)
    g.add_argument("--length-penalty", type=float)
    g.add_argument("--no-repeat-ngram-size", type=int)
    g.add_argument("--seed", type=int, help="seed for sampling (reproducible generations)")
    p.add_argument("--aggregation", default="first", choices=["first", "simple", "average", "max"],
                   help="NER: how sub-word predictions become word labels (default first)")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if bool(args.texts) == bool(args.file):
        print("error: give --text/--prompt (repeatable) or --file, not both and not neither", file=sys.stderr)
        sys.exit(2)
    try:
        for key, value in (("TOKENIZERS_PARALLELISM", "false"), ("TRANSFORMERS_VERBOSITY", "error"),
                           ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):  # our own progress bar is the one that counts
            os.environ.setdefault(key, value)
        from omegaconf import OmegaConf

        run_dir, _ = resolve_run(args.run_dir)  # a bad path or file fails here, before torch is imported
        task = str(OmegaConf.load(run_dir / ".hydra" / "config.yaml").task.name)
        rows = read_inputs(args.file, task, args.column) if args.file else \
            [{"text": t, "_input": t} for t in args.texts]
        predictor = Predictor(run_dir, device=args.device)
        quiet = args.quiet or os.environ.get("FINETUNE_QUIET") == "1"
        gen = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample, "temperature": args.temperature,
               "top_p": args.top_p, "top_k": args.top_k, "num_beams": args.num_beams,
               "length_penalty": args.length_penalty, "no_repeat_ngram_size": args.no_repeat_ngram_size}
        preds = predictor.predict([r.pop("_input") for r in rows], batch_size=args.batch_size, progress=not quiet,
                                  seed=args.seed, aggregation=args.aggregation, **gen)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    field = OUTPUT_FIELD[predictor.task_name]
    try:
        write_outputs([{**row, field: pred} for row, pred in zip(rows, preds)], args.out)
    except BrokenPipeError:  # stdout piped into `head` and closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
