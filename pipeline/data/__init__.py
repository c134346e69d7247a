"""Data stage: raw DatasetDict (train / validation / test) with the task's canonical columns (``task.columns``).

Rows the task cannot use are dropped by the task's ``clean`` and counted per split and reason (metrics.json
``data_dropped_rows``); nothing is changed silently. The task looks at the whole data (``task.prepare``: label sets,
tag schemes) before the ``max_*_samples`` caps keep the first rows of a split, so a cap (``debug=smoke``) never
creates an error the whole data does not have (a capped training split that lacks a tag); what the caps kept and set
aside is counted (metrics.json ``data_capped``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import datasets

from pipeline.data import mixture, streaming
from pipeline.data.readers import data_files, infer_source, read_hub, read_local
from pipeline.data.synthetic import generate
from pipeline.errors import DataError

log = logging.getLogger("pipeline")
SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation"}


CAPS = (("train", "max_train_samples"), ("validation", "max_eval_samples"), ("test", "max_test_samples"))


def load_raw(cfg, task, seed: int):
    """Read ``cfg.data`` for ``task``: canonical columns, three splits, unusable rows dropped, the task's look at the
    whole data (``task.prepare``), then the caps. Returns (DatasetDict, {split: {reason: rows dropped}},
    {split: {"kept": rows, "set_aside": rows}} of the capped splits). A ``data.mixture`` is read by
    pipeline/data/mixture.py (``load_data`` returns its facts too)."""
    loaded = load_data(cfg, task, seed)
    return loaded.raw, loaded.dropped, loaded.capped


@dataclass
class Loaded:
    """What the data stage read: the three splits the run trains and evaluates on, rows dropped and capped per
    split, and for a mixture its facts (metrics.json ``data_mixture``) and each source's own validation / test."""
    raw: Any
    dropped: dict = field(default_factory=dict)
    capped: dict = field(default_factory=dict)
    mixture: dict = field(default_factory=dict)
    per_source: dict = field(default_factory=dict)  # {source name: DatasetDict(validation, test)}
    stream: Any = None  # data.streaming: the training rows as an IterableDataset (raw["train"] is its head)
    streaming: dict = field(default_factory=dict)  # its facts (metrics.json data_streaming)


def load_data(cfg, task, seed: int) -> Loaded:
    """``load_raw`` with the mixture's facts (``data.mixture``: pipeline/data/mixture.py)."""
    if cfg.get("mixture"):
        *parts, stream, facts = mixture.load(cfg, task, seed, read_source, apply_caps, stream_source)
        return Loaded(*parts, stream=stream, streaming=facts)
    if cfg.get("streaming"):
        return load_stream(cfg, task, seed)
    ds, dropped = read_source(cfg, task, seed)
    task.prepare(ds)  # label sets, tag schemes: from the whole data, before any cap
    ds, capped = apply_caps(cfg, ds)
    return Loaded(ds, dropped, capped)


def load_stream(cfg, task, seed: int) -> Loaded:
    """data.streaming=true (pipeline/data/streaming.py): the head and the eval splits map-style, the training rows
    a stream."""
    ds, stream, dropped, facts = stream_source(cfg, task, seed)
    task.prepare(ds)  # label sets, tag schemes: from the head and the eval splits
    capped = {}
    for split, key in CAPS[1:]:
        if cfg.get(key) is not None and int(cfg[key]) < len(ds[split]):
            capped[split] = {"kept": int(cfg[key]), "set_aside": len(ds[split]) - int(cfg[key])}
            ds[split] = ds[split].select(range(int(cfg[key])))
    return Loaded(ds, dropped, capped, stream=stream, streaming=facts)


def stream_source(cfg, task, seed: int):
    """One source as a stream (pipeline/data/streaming.py ``load``): (head + eval splits, the training stream,
    rows dropped, facts)."""
    source = str(cfg.source) if str(cfg.source) != "auto" else infer_source(cfg, task)
    _log_source(cfg, source)
    mapping = dict(cfg.columns or {})
    return streaming.load(cfg, task, seed,
                          canonical=lambda d: _canonical_columns(d, task.columns, task.optional_columns, mapping),
                          clean_split=task.clean)


def read_source(cfg, task, seed: int):
    """One source (``cfg``: the data group, or one ``data.mixture`` entry merged over it): read, the task's columns,
    three splits, unusable rows dropped. Returns (DatasetDict, {split: {reason: rows dropped}})."""
    source = str(cfg.source)
    if source == "auto":  # a run's config holds the source stages/resolve chose; direct callers may pass auto
        source = infer_source(cfg, task)
    _log_source(cfg, source)
    if source == "synthetic":
        ds = generate(task, cfg.synthetic, seed)
    elif source == "hub":
        if not cfg.get("path"):
            raise DataError("data.source=hub needs data.path=<dataset id>")
        ds = read_hub(cfg)
    else:
        files = data_files(cfg)
        if "train" not in files:
            raise DataError(f"data.source={source} needs data.train_file=<path>")
        ds = read_local(cfg, files, source)
    ds = datasets.DatasetDict({SPLIT_ALIASES.get(k, k): task.raw_rows(SPLIT_ALIASES.get(k, k), v)
                               for k, v in ds.items()})
    mapping = {} if source == "synthetic" else dict(cfg.columns or {})  # generated data is canonical already
    ds = _canonical_columns(ds, task.columns, task.optional_columns, mapping)
    ds = _complete_splits(ds, cfg, seed)
    dropped = {}
    for split in list(ds):
        ds[split], why = task.clean(split, ds[split])
        if why:
            dropped[split] = why
            log.warning("data: dropped from split '%s': %s", split, ", ".join(f"{n} rows ({r})" for r, n in why.items()))
        if len(ds[split]) == 0:
            raise DataError(f"data split '{split}' is empty after dropping the rows above; check the file (or the "
                            f"data.columns mapping)")
    return ds, dropped


def apply_caps(cfg, ds):
    """The ``max_*_samples`` caps: the first rows of each split. Returns (DatasetDict, {split: {kept, set_aside}})."""
    capped = {}
    for split, key in CAPS:
        if cfg.get(key) is not None and int(cfg[key]) < len(ds[split]):
            if int(cfg[key]) < 1:
                raise DataError(f"data.{key}={cfg[key]} leaves the {split} split empty; give a cap >= 1 or null")
            capped[split] = {"kept": int(cfg[key]), "set_aside": len(ds[split]) - int(cfg[key])}
            ds[split] = ds[split].select(range(int(cfg[key])))
    if capped:
        log.info("data: data.max_*_samples kept the first rows: %s",
                 ", ".join(f"{split} {c['kept']} ({c['set_aside']} set aside)" for split, c in capped.items()))
    return ds, capped


def _log_source(cfg, source: str) -> None:
    files = [f"{k.split('_')[0]}={cfg[k]}" for k in ("train_file", "validation_file", "test_file") if cfg.get(k)]
    where = ", ".join(files) if files else f"data.path={cfg.path}" if source == "hub" else \
        "generated (pipeline/data/synthetic.py; name files with data.train_file=...)"
    unused = f"; data.path={cfg.path} not used: files named win" if files and cfg.get("path") else ""
    log.info("data: source=%s: %s%s", source, where, unused)


def _class_names(feature):
    """Label names of a ClassLabel column or of a list-of-ClassLabel column, else None."""
    if isinstance(feature, datasets.ClassLabel):
        return feature.names
    inner = getattr(feature, "feature", None)
    if isinstance(feature, datasets.Sequence | datasets.List) and isinstance(inner, datasets.ClassLabel):
        return inner.names
    return None


def _canonical_columns(ds, wanted: tuple, optional: tuple, mapping: dict):
    """Select and rename the task's columns; class-id columns (hub datasets) become their names."""
    out = {}
    for split, d in ds.items():
        renames = {}
        for canon in wanted + optional:
            src = mapping.get(canon, canon)
            if src not in d.column_names and canon in d.column_names:  # a mapping meant for another source (a
                log.info("data: split '%s' has no column '%s' (data.columns.%s) but has '%s': using it", split, src,
                         canon, canon)  # recipe's Hub dataset) and files in the canonical columns
                src = canon
            if src not in d.column_names:
                if canon in optional:
                    continue
                raise DataError(f"split '{split}' has no column '{src}' (needed as '{canon}'); columns are "
                                f"{d.column_names}; set data.columns.{canon}=<column>")
            renames[src] = canon
        d = d.select_columns(list(renames)).rename_columns({k: v for k, v in renames.items() if k != v})
        for col in list(d.column_names):
            names = _class_names(d.features[col])
            if names is None:
                continue
            listed = not isinstance(d.features[col], datasets.ClassLabel)
            feature = datasets.List(datasets.Value("string")) if listed else datasets.Value("string")
            d = d.map(lambda b, c=col, n=names, many=listed: {c: [[n[i] for i in row] if many else n[row]
                                                                  for row in b[c]]},
                      batched=True, features=datasets.Features({**d.features, col: feature}),
                      desc=f"{col}: class ids -> names")
        out[split] = d
    return datasets.DatasetDict(out)


def _complete_splits(ds, cfg, seed: int):
    if "train" not in ds:
        raise DataError(f"no train split in the data (found {list(ds)}); give data.train_file=...")
    ds, n = datasets.DatasetDict(ds), len(ds["train"])
    for split, pct in (("validation", cfg.validation_split_percentage), ("test", cfg.test_split_percentage)):
        if split not in ds:
            if n < 3:
                raise DataError(f"cannot cut a {split} split from {n} training rows; give data.{split}_file=...")
            parts = ds["train"].train_test_split(test_size=max(1, int(n * pct / 100)), seed=seed)
            ds["train"], ds[split] = parts["train"], parts["test"]
    return datasets.DatasetDict({k: ds[k] for k in ("train", "validation", "test")})
