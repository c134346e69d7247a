"""``data.streaming=true``: the training split is read as a ``datasets`` IterableDataset (local JSON / CSV / text
files, or a Hub dataset), cleaned and tokenised (and packed) on the fly, batch by batch, so start-up and memory do
not depend on the data's size (docs/data.md "Streaming").

- The first ``data.stream_head`` rows (the *head*) are read once, map-style: the task looks at them (``prepare``:
  a label set, the tag scheme), a scratch tokenizer is trained on them, and ``finetune-inspect`` shows them. When
  the validation / test splits have no file of their own they are the head's first rows (``data.*_split_percentage``
  of the head, in file order) and the training stream starts after them, so no held-out row is trained on.
- Validation and test stay map-style (evaluation needs lengths and stable order).
- Each streamed batch of ``data.stream_batch`` rows becomes a small Dataset that goes through the same code as
  map-style data: ``task.raw_rows``, the column mapping, ``task.clean``, then ``task.preprocess`` (packing packs
  within that batch). Rows a task drops are not counted for the stream (they are for the head and the eval splits).
- A shuffle buffer (``data.stream_shuffle_buffer`` rows, seeded; 0: file order) mixes the rows; its seed moves
  with the epoch (``IterableDataset.set_epoch``, called by the Trainer).
- It needs ``trainer.max_steps``: a stream has no length to derive epochs from (pipeline/stages/check.py).
- Resume: the Trainer replays the stream from its start and skips the batches already trained
  (``skip_first_batches``), so a resumed run sees the same batches as a straight one. Several processes: each rank
  reads its own part (``datasets.distributed.split_dataset_by_node``; pipeline/training/streams.py).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import datasets

from pipeline.data.readers import EXTENSIONS, file_format, infer_source, read_local
from pipeline.errors import DataError

log = logging.getLogger("pipeline")


def open_stream(cfg, task):
    """The raw training rows of ``cfg`` (a data group or a mixture source's) as an IterableDataset."""
    source = str(cfg.source)
    if source == "auto":
        source = infer_source(cfg, task)
    if source == "hub" or (not cfg.get("train_file") and cfg.get("path")):
        split = dict(cfg.get("splits") or {}).get("train", "train")
        try:
            return datasets.load_dataset(cfg.path, cfg.get("config_name"), revision=cfg.get("revision"), split=split,
                                         streaming=True)
        except Exception as e:
            raise DataError(f"data.path={cfg.path}: cannot stream the hub dataset ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''}); use local files with "
                            f"data.train_file=...") from e
    if not cfg.get("train_file"):
        raise DataError("data.streaming=true needs data.train_file=<path> or data.path=<hub dataset id>")
    path = str(Path(str(cfg.train_file)).expanduser())
    if not Path(path).is_file():
        raise DataError(f"data.train_file={path}: file not found; give an existing path")
    kind = file_format(path, source)
    if kind not in ("json", "csv", "text"):
        raise DataError(f"data.streaming=true reads JSON lines, CSV or text files (and Hub datasets); "
                        f"{path} is {kind}: convert it to JSON lines or set data.streaming=false")
    kwargs = {"sample_by": cfg.text.sample_by} if kind == "text" else {}
    return datasets.load_dataset(kind, data_files={"train": path}, split="train", streaming=True,
                                 encoding="utf-8-sig", **kwargs)


def load(cfg, task, seed: int, canonical, clean_split):
    """(DatasetDict of the head's train rows + map-style validation / test, the training stream of clean raw rows,
    {split: {reason: rows}} dropped from the head and the eval splits, facts for metrics.json ``data_streaming``)."""
    stream = open_stream(cfg, task)
    size = int(cfg.get("stream_head") or 1000)
    head = list(stream.take(size))
    if not head:
        raise DataError(f"data.train_file={cfg.get('train_file') or cfg.get('path')}: the stream has no rows")
    files = {split: str(cfg[key]) for split, key in (("validation", "validation_file"), ("test", "test_file"))
             if cfg.get(key)}
    parts, cut, start = {}, [], 0
    for split, pct in (("validation", cfg.validation_split_percentage), ("test", cfg.test_split_percentage)):
        if split not in files:  # the stream's first rows, held out: training streams after them
            k = max(1, int(len(head) * float(pct) / 100))
            parts[split], start = datasets.Dataset.from_list(head[start:start + k]), start + k
            cut.append(split)
    if start >= len(head):
        raise DataError(f"data.stream_head={size}: {len(head)} rows read, none left for training after the "
                        f"validation / test rows; give data.validation_file / test_file or a larger stream_head")
    parts["train"] = datasets.Dataset.from_list(head[start:])
    if files:
        source = str(cfg.source) if str(cfg.source) not in ("auto", "hub") else \
            EXTENSIONS.get(Path(next(iter(files.values()))).suffix.lower(), "json")
        parts.update(read_local(cfg, files, source))
    ds = datasets.DatasetDict({k: task.raw_rows(k, parts[k]) for k in ("train", "validation", "test")})
    ds = canonical(ds)
    dropped = {}
    for split in list(ds):
        ds[split], why = clean_split(split, ds[split])
        if why:
            dropped[split] = why
    columns = list(ds["train"].column_names)
    if start:
        stream = stream.skip(start)
        log.info("data: streaming: %s = the first %d rows of the stream; training streams from row %d",
                 " + ".join(cut), start, start)
    buffer = int(cfg.get("stream_shuffle_buffer") or 0)
    if buffer > 0:
        stream = stream.shuffle(seed=seed, buffer_size=buffer)
    batch = int(cfg.get("stream_batch") or 256)
    raw_columns = list(dict.fromkeys(k for row in head for k in row))  # a JSON stream may not know its features

    def clean(rows):
        d = datasets.Dataset.from_dict(rows)
        with quiet():
            d = canonical(datasets.DatasetDict({"train": task.raw_rows("train", d)}))["train"]
            d, _ = clean_split("train", d)
        return d.select_columns(columns).to_dict()

    stream = stream.map(clean, batched=True, batch_size=batch, remove_columns=raw_columns)
    if cfg.get("max_train_samples") is not None:
        stream = stream.take(int(cfg.max_train_samples))
    facts = {"head_rows": len(head), "held_out_from_head": cut, "held_out_rows": start, "shuffle_buffer": buffer,
             "stream_batch": batch, "columns": columns}
    return ds, stream, dropped, facts


@contextmanager
def quiet():
    """No progress bars or per-batch log lines while a streamed batch goes through the map-style code."""
    bars = datasets.utils.logging.is_progress_bar_enabled()
    level = log.level
    datasets.disable_progress_bars()
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


def tokenize(task, stream, columns: list, tokenizer, model, batch: int):
    """The raw training stream tokenised (and packed, within each batch of ``batch`` rows) on the fly with the
    task's own ``preprocess``."""

    def encode(rows):
        d = datasets.Dataset.from_dict(rows)
        with quiet():
            try:
                out, _ = task.cut_counts(task.preprocess(datasets.DatasetDict({"train": d}), tokenizer, model))
            except KeyError as e:  # a label / tag the task's maps (built from the head) do not hold
                raise DataError(f"data.streaming: a streamed row has {e} which the first data.stream_head rows and "
                                f"the eval splits do not have (the label set comes from them); raise "
                                f"data.stream_head or give a validation file holding every label") from None
        return out["train"].to_dict()

    return stream.map(encode, batched=True, batch_size=batch, remove_columns=columns)
