"""Readers that turn one source (hub id, CoNLL columns, JSON/CSV, plain text) into a DatasetDict of raw rows."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import datasets

from pipeline.errors import DataError
from pipeline.util.text import unescape

SPLIT_KEYS = {"train": "train_file", "validation": "validation_file", "test": "test_file"}
EXTENSIONS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text", ".conll": "conll", ".iob": "conll"}


def data_files(cfg) -> dict:
    files = {split: os.path.expanduser(str(cfg[key])) for split, key in SPLIT_KEYS.items() if cfg.get(key)}
    for split, path in files.items():
        if os.path.isdir(path):
            raise DataError(f"data.{SPLIT_KEYS[split]}={path} is a folder; give a file")
        if not os.path.isfile(path):
            raise DataError(f"data.{SPLIT_KEYS[split]}={path}: file not found (cwd {os.getcwd()}); "
                            f"give an existing path")
        if os.path.getsize(path) == 0:
            raise DataError(f"data.{SPLIT_KEYS[split]}={path}: the file is empty")
    return files


def infer_source(cfg, task) -> str:
    """The source the data is read from. Local files named win (over data.path, a recipe's Hub dataset, and over
    generated data); their format is data.source when that names one, else it follows the extension (a .txt file
    holds what the task says: plain text, or CoNLL columns for word-tagging tasks). Without files: data.path -> hub,
    else synthetic."""
    files = [cfg.get(k) for k in SPLIT_KEYS.values() if cfg.get(k)]
    folder = next((k for k in SPLIT_KEYS.values() if cfg.get(k) and os.path.isdir(os.path.expanduser(str(cfg[k])))),
                  None)
    if folder:
        raise DataError(f"data.{folder}={cfg[folder]} is a folder; give a file")
    if cfg.source not in ("auto", "hub", "synthetic") or (cfg.source != "auto" and not files):
        return cfg.source
    if files:
        kind = EXTENSIONS.get(Path(files[0]).suffix.lower())
        if kind is None:
            raise DataError(f"cannot tell the format of {files[0]}; set data.source=conll|json|csv|text")
        return task.text_file_format if kind == "text" else kind
    return "hub" if cfg.get("path") else "synthetic"


def _conll_rows(path: str, token_col: int, tag_col: int, sep):
    tokens, tags, width, rows = [], [], None, []
    with open(path, encoding="utf-8-sig") as f:  # a byte-order mark (Windows editors) is not part of a token
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    rows.append((tokens, tags))
                    tokens, tags = [], []
                continue
            if line.startswith("-DOCSTART-"):
                continue
            parts = line.split(sep) if sep else line.split()
            if width is None:
                width = len(parts)
            if len(parts) != width or len(parts) < 2:
                raise DataError(f"{path}:{lineno}: expected {width if width and width >= 2 else '>= 2'} columns "
                                f"(token ... tag), found {len(parts)}: {line[:60]!r}; fix the line or set "
                                f"data.conll.separator")
            try:
                tokens.append(parts[token_col])
                tags.append(parts[tag_col])
            except IndexError:
                raise DataError(f"{path}:{lineno}: data.conll.token_column={token_col} / tag_column={tag_col} "
                                f"out of range for {len(parts)} columns") from None
    if tokens:
        rows.append((tokens, tags))
    if not rows:
        raise DataError(f"{path}: no sentences found (CoNLL: one 'token ... tag' line per word, blank line "
                        f"between sentences)")
    return rows


def _gen_rows(rows):
    for tokens, tags in rows:
        yield {"tokens": tokens, "tags": tags}


def read_conll(cfg, files: dict):
    out = {}
    for split, path in files.items():
        try:
            sep = cfg.conll.separator
            rows = _conll_rows(path, int(cfg.conll.token_column), int(cfg.conll.tag_column),
                               unescape(sep) if isinstance(sep, str) else None)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); convert it, e.g. "
                            f"iconv -f latin1 -t utf-8") from None
        # from_generator writes an Arrow file keyed by the rows' hash: later `map`s are cached on disk.
        out[split] = datasets.Dataset.from_generator(_gen_rows, gen_kwargs={"rows": rows})
    return datasets.DatasetDict(out)


def read_files(kind: str, cfg, files: dict):
    """One ``load_dataset`` per split: splits may carry different extra columns (DialogSum's test has summary2..)."""
    kwargs = {"sample_by": cfg.text.sample_by} if kind == "text" else {}
    kwargs["encoding"] = "utf-8-sig"  # a byte-order mark is stripped (the text reader would keep it in the text)
    out = {}
    for split, path in files.items():
        try:
            out[split] = datasets.load_dataset(kind, data_files={split: path}, **kwargs)[split]
        except Exception as e:  # pyarrow / json parse errors: name the file, not the stack
            why = e
            while type(why).__name__ == "DatasetGenerationError" and (why.__cause__ or why.__context__):
                why = why.__cause__ or why.__context__  # "An error occurred while generating": say which
            raise DataError(f"could not read {kind} file {path}: {type(why).__name__}: "
                            f"{(str(why).splitlines() or [''])[0][:200]}; fix the file or set data.source") from e
    return datasets.DatasetDict(out)


def file_format(path: str, source: str) -> str:
    """The format a split's file is read in: its extension's where that names one format (.jsonl / .json, .csv,
    .conll / .iob), else ``source`` (a .txt file holds what the task says: plain text or CoNLL columns). Splits may
    mix formats: a JSON-lines train file beside a CSV validation file."""
    kind = EXTENSIONS.get(Path(path).suffix.lower())
    return kind if kind in ("json", "csv", "conll") else source


def read_local(cfg, files: dict, source: str):
    """Local files, each split in its own file's format (``file_format``)."""
    kinds = {split: file_format(path, source) for split, path in files.items()}
    out = {}
    for kind in dict.fromkeys(kinds.values()):
        subset = {split: path for split, path in files.items() if kinds[split] == kind}
        out.update(read_conll(cfg, subset) if kind == "conll" else read_files(kind, cfg, subset))
    if len(set(kinds.values())) > 1:
        logging.getLogger("pipeline").info("data: formats per split: %s", kinds)
    return datasets.DatasetDict(out)


def read_hub(cfg):
    try:
        ds = datasets.load_dataset(cfg.path, cfg.get("config_name"), revision=cfg.get("revision"))
    except Exception as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        why = "offline mode is on (HF_HUB_OFFLINE=1) and it is not cached" if offline else \
            f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        raise DataError(f"data.path={cfg.path}: cannot load the hub dataset ({why}); use local files with "
                        f"data.train_file=... or data=synthetic") from e
    if not isinstance(ds, datasets.DatasetDict):
        ds = datasets.DatasetDict({"train": ds})
    splits = dict(cfg.get("splits") or {})  # a mixture source: {train: <hub split>, validation: <hub split>, ...}
    if splits:
        missing = [s for s in splits.values() if s not in ds]
        if missing:
            raise DataError(f"data.path={cfg.path} has no split {missing[0]!r} (splits: {list(ds)}); fix splits=...")
        ds = datasets.DatasetDict({ours: ds[theirs] for ours, theirs in splits.items()})
    return ds
