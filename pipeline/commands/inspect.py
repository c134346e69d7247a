"""``finetune-inspect <the same overrides as finetune>``: N examples as the model receives them, in seconds.

    finetune-inspect recipe=gpt2-instruct debug=smoke                  # 3 training rows, coloured on a terminal
    finetune-inspect recipe=gpt2-instruct debug=smoke --n 1 --json     # for tools: ids, tokens, labels per row
    finetune-inspect recipe=minilm-sst2 --split validation | less      # plain when piped

For each tokenised row: the decoded tokens, which of them carry loss (labels != -100: green on a terminal,
``[[...]]`` when plain), where packing joins examples (position ids restarting at 0: ``║``), and for the split the
truncation the task counted (``task.<key>`` cuts, examples truncated / tokens cut). Conversational rows also show
the chat template's rendering of their raw conversation. It reads the data the way ``finetune`` does (files,
``data.mixture``, ``data.streaming``: the stream's head) and builds the model on the meta device: the tokenizer and
the model's config, no weights (a scratch tokenizer is trained on the data, as a run would).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from pipeline.commands import one_line_errors
from pipeline.commands.app import user_overrides
from pipeline.errors import ConfigError
from pipeline.util.paths import CONF_DIR, resolve_pkg_path

LOSS_OPEN, LOSS_CLOSE, JOIN = "[[", "]]", " ║ "


def parse(argv):
    p = argparse.ArgumentParser(prog="finetune-inspect", description=__doc__.split("\n\n")[0],
                                epilog="Other arguments are finetune's Hydra overrides (recipe=..., data.*=...).")
    p.add_argument("--n", type=int, default=3, help="rows to show (default 3)")
    p.add_argument("--split", default="train", choices=("train", "validation", "test"))
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colours: auto (on a terminal), always, never")
    args, overrides = p.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        raise ConfigError(f"finetune-inspect: unknown option {bad[0]}; options are --n, --split, --json, --color; "
                          f"everything else is a key=value override")
    if args.n < 1:
        raise ConfigError(f"--n={args.n}: give at least 1 row")
    return args, overrides


def compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=user_overrides(overrides))


def meta_model(cfg, task, raw):
    """(tokenizer, model) with the model built on the meta device: its class, config and embedding size, no weights
    read or allocated (the chat template's new tokens resize it as a run would)."""
    # torch / transformers: imported only once the arguments are checked (they cost seconds).
    import torch
    import transformers
    from pipeline.families import get_family
    from pipeline.models import load
    from pipeline.models.scratch import build_config, train_tokenizer

    mcfg, family = cfg.model, get_family(cfg.model.family)
    if mcfg.init == "scratch":
        tokenizer = load.named_tokenizer(mcfg, task) or train_tokenizer(family, task.tokenizer_corpus(raw),
                                                                         int(mcfg.scratch.vocab_size))
        config = build_config(family, tokenizer, dict(mcfg.scratch), task.model_kwargs())
    else:
        tokenizer = load.load_tokenizer(mcfg, task)
        try:
            config = transformers.AutoConfig.from_pretrained(resolve_pkg_path(mcfg.name_or_path),
                                                             revision=mcfg.revision, **task.model_kwargs(),
                                                             trust_remote_code=bool(mcfg.trust_remote_code))
        except Exception as e:
            raise load._load_error(str(mcfg.name_or_path), e) from e
    with torch.device("meta"):
        model = getattr(transformers, task.auto_class).from_config(config)
    # transformers' mean_resizing (new embedding rows at the old rows' mean) checks a covariance with .item(), which
    # raises on meta tensors (docs/library-notes.md): here rows only need to exist, so resize without it.
    resize = type(model).resize_token_embeddings
    model.resize_token_embeddings = lambda size, **kw: resize(model, size, mean_resizing=False)
    load._ensure_pad_token(tokenizer, model)
    return tokenizer, model


def rows(tokenizer, split, n: int, label_names=None) -> list[dict]:
    """The first ``n`` tokenised rows: per token its id, text, label and the example it belongs to."""
    out = []
    for i in range(min(n, len(split))):
        row = split[i]
        ids = list(row["input_ids"])
        labels = list(row["labels"]) if "labels" in row and isinstance(row["labels"], list) else None
        positions = row.get("position_ids")
        example, tokens = 0, []
        for j, tid in enumerate(ids):
            if positions is not None and j > 0 and positions[j] == 0:
                example += 1  # packing: the next example starts here
            label = labels[j] if labels is not None and j < len(labels) else None
            tokens.append({"id": int(tid), "text": tokenizer.decode([tid]), "label": label,
                           "loss": label is not None and label != -100, "example": example})
        entry = {"row": i, "length": len(ids), "examples": example + 1, "tokens": tokens,
                 "trained_tokens": sum(t["loss"] for t in tokens)}
        if labels is None and "labels" in row:
            entry["label"] = row["labels"]  # a class id (sequence classification) and its name
            if label_names and isinstance(row["labels"], int) and row["labels"] < len(label_names):
                entry["label_name"] = label_names[row["labels"]]
        out.append(entry)
    return out


def plain(entry: dict) -> str:
    parts, prev = [], 0
    for t in entry["tokens"]:
        if t["example"] != prev:
            parts.append(JOIN)
            prev = t["example"]
        parts.append(f"{LOSS_OPEN}{t['text']}{LOSS_CLOSE}" if t["loss"] else t["text"])
    return "".join(parts)


def rich_text(entry: dict):
    # rich: only for a terminal.
    from rich.text import Text

    text, prev = Text(), 0
    for t in entry["tokens"]:
        if t["example"] != prev:
            text.append(JOIN, style="bold magenta")
            prev = t["example"]
        text.append(t["text"], style="bold green" if t["loss"] else "dim")
    return text


def inspect(overrides: list[str], n: int = 3, split: str = "train") -> dict:
    """What ``finetune-inspect`` prints, as a dict (tests and --json)."""
    # the pipeline's data and task code: datasets, tokenizers (seconds), after argument parsing.
    import datasets
    from pipeline.data import load_data
    from pipeline.stages import resolve
    from pipeline.tasks import get_task

    cfg = resolve.resolve(compose(overrides))
    task = get_task(cfg)
    loaded = load_data(cfg.data, task, int(cfg.seed))
    raw = loaded.raw
    tokenizer, model = meta_model(cfg, task, raw)
    task.adapt(tokenizer, model)
    sample = raw[split].select(range(min(8 * n, len(raw[split]))))  # packing: enough examples to fill n rows
    tokenized, cut = task.cut_counts(task.preprocess(datasets.DatasetDict({split: sample}), tokenizer, model))
    out = {"task": task.name, "split": split, "model": str(cfg.model.name_or_path or f"scratch {cfg.model.family}"),
           "rows": rows(tokenizer, tokenized[split], n, getattr(task, "labels", None)), "truncated": cut.get(split, {}),
           "chat_template": task.render_rows(sample.select(range(min(n, len(sample)))), tokenizer)}
    if loaded.mixture:
        out["data_mixture"] = loaded.mixture["rows"]
    if loaded.streaming:
        out["streaming"] = {k: v for k, v in loaded.streaming.items() if k != "columns"}
    return out


def show(report: dict, color: bool) -> None:
    head = (f"{report['task']} · {report['split']} split · {report['model']} · loss on "
            + ("green tokens" if color else f"{LOSS_OPEN}...{LOSS_CLOSE}") + f" · packing joins {JOIN.strip()}")
    lines = [head]
    if report["truncated"]:
        lines.append(f"truncation in these rows: {report['truncated']}")
    if report.get("data_mixture"):
        lines.append(f"mixture rows per source: {report['data_mixture']}")
    if color:
        # rich: only for a terminal.
        from rich.console import Console

        console = Console(highlight=False, force_terminal=True)  # --color always: colours also into a pipe
        console.print(lines[0], style="bold")
        for line in lines[1:]:
            console.print(line)
    else:
        print("\n".join(lines))
    for k, entry in enumerate(report["rows"]):
        label = f" label {entry['label']} ({entry.get('label_name', '?')})" if "label" in entry else ""
        title = (f"-- row {entry['row']}: {entry['length']} tokens, {entry['trained_tokens']} carry loss, "
                 f"{entry['examples']} example(s){label}")
        rendered = (report.get("chat_template") or [])
        if color:
            console.print(title, style="bold cyan")
            console.print(rich_text(entry))
        else:
            print(title)
            print(plain(entry))
        if k < len(rendered) and rendered[k] is not None:
            shown = f"   chat template of raw row {k}:\n" + "\n".join("   | " + ln for ln in rendered[k].splitlines())
            console.print(shown, style="yellow", markup=False) if color else print(shown)


def main(argv=None) -> None:
    with one_line_errors():
        args, overrides = parse(sys.argv[1:] if argv is None else argv)
        # stdout carries the report only (--json is read by tools): what libraries print while loading goes to
        # stderr, e.g. transformers' "[INFO] Running in WANDB offline mode" at import when WANDB_MODE=offline
        with contextlib.redirect_stdout(sys.stderr):
            report = inspect(overrides, args.n, args.split)
        if args.json:
            json.dump(report, sys.stdout, ensure_ascii=False, indent=1)
            sys.stdout.write("\n")
            return
        color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
        show(report, color)


if __name__ == "__main__":
    main()
