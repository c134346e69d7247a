"""``data.mixture``: several sources in one run, each with its own files or Hub dataset, column mapping, row format
and ``weight`` (docs/data.md "Mixtures").

Each source is read like a one-source run (pipeline/data/__init__.py ``read_source``), with a copy of the task made
for it: its ``data`` keys are the entry's over the ``data`` group's (caps, split percentages, CoNLL / text settings
are shared), and its ``format`` is the task's row format for that source (``task.format``, where the task has
one). Each source is cleaned and looked at by the task on its own (``task.prepare``: a label set, a tag scheme); what
must agree across sources (``task.mixture_signature``, e.g. the label set of classification) is compared, and a
source that differs is refused in one line naming it. The combined data is then looked at by the run's task
(``clean`` + ``prepare``), the caps keep the first rows of each source, and the training split is drawn:

    concat       each source's training rows sampled at the fraction ``weight`` (a seeded sample without
                 replacement; a weight above 1 repeats every row floor(weight) times, plus a sampled rest), then
                 concatenated (the Trainer shuffles them)
    interleave   ``datasets.interleave_datasets`` with probabilities weight / sum(weights) and ``data.mix_stopping``
                 (first_exhausted: stop when a source runs out; all_exhausted: oversample until every source is used)

Both draws are deterministic for a given ``seed``. The validation and test splits are every source's own, whole
(after the caps): concatenated for the combined metrics, and kept per source for ``eval_<source>_<metric>`` /
``test_<source>_<metric>``. metrics.json ``data_mixture`` records the rows of each source per split.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
from omegaconf import OmegaConf

from pipeline.errors import ConfigError, DataError

log = logging.getLogger("pipeline")

STRATEGIES = ("concat", "interleave")
STOPPING = ("first_exhausted", "all_exhausted")
# Keys of one mixture entry: where its rows are and how they read (each overrides the data group's key of that
# name), plus the entry's own name, row format and weight.
SOURCE_KEYS = ("source", "path", "config_name", "revision", "splits", "train_file", "validation_file", "test_file",
               "columns", "conll", "text", "validation_split_percentage", "test_split_percentage")
OWN_KEYS = ("name", "format", "weight")
# The data group's keys that say where one source is: a mixture entry gives its own (the group's are not used).
WHERE_KEYS = ("source", "path", "config_name", "revision", "splits", "train_file", "validation_file", "test_file",
              "columns")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def entries(cfg) -> list[dict]:
    """The mixture's entries as plain dicts with ``name``, ``weight``, ``format`` and the source's own keys; each
    malformed entry is one line naming it."""
    raw = cfg.get("mixture")
    items = OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else list(raw)
    if not isinstance(items, list) or not items:
        raise ConfigError("data.mixture must be a list of sources, e.g. data.mixture='[{name: a, train_file: "
                          "a.jsonl, weight: 1}, {name: b, train_file: b.jsonl, weight: 1}]'")
    out, names = [], set()
    for i, item in enumerate(items):
        where = f"data.mixture[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} is {item!r}; each source is a mapping with train_file=... (or path=...) "
                              f"and weight=...")
        unknown = sorted(set(item) - set(SOURCE_KEYS) - set(OWN_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; a source takes {', '.join(OWN_KEYS + SOURCE_KEYS)}")
        name = str(item.get("name") or _default_name(item, i))
        if not NAME.match(name):
            raise ConfigError(f"{where}: name {name!r} goes into metric names (eval_<name>_<metric>); use letters, "
                              f"digits, '_' or '-'")
        if name in names:
            raise ConfigError(f"{where}: two sources are named '{name}'; give each its own name=...")
        names.add(name)
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"{where} '{name}': weight={weight!r} is not a number; give weight=<number >= 0>")
        if weight < 0:
            raise ConfigError(f"data.mixture source '{name}': weight={weight} is negative; give a weight >= 0 (0 "
                              f"keeps the source for evaluation only)")
        if not any(item.get(k) for k in ("train_file", "path")):
            raise ConfigError(f"data.mixture source '{name}' has no train split; give its train_file=... (or "
                              f"path=<hub dataset id> with a train split)")
        out.append({**item, "name": name, "weight": float(weight)})
    if all(e["weight"] == 0 for e in out):
        raise ConfigError(f"data.mixture: every weight is 0 ({', '.join(e['name'] for e in out)}); give at least "
                          f"one source a weight > 0")
    if len(out) < 2:
        log.info("data: data.mixture has one source (%s)", out[0]["name"])
    return out


def _default_name(item: dict, i: int) -> str:
    """A source's name when the entry gives none: its train file's folder (``alpaca/train.jsonl``: alpaca), the Hub
    id's last part, else source<i>."""
    if item.get("train_file"):
        parent = Path(str(item["train_file"])).parent.name
        return re.sub(r"[^A-Za-z0-9_-]", "_", parent or Path(str(item["train_file"])).stem)
    if item.get("path"):
        return re.sub(r"[^A-Za-z0-9_-]", "_", str(item["path"]).rstrip("/").split("/")[-1])
    return f"source{i}"


def source_config(cfg, entry: dict):
    """The data group for one entry: the group's shared keys (caps, split percentages, readers' settings), its
    where-keys reset, then the entry's own keys."""
    base = OmegaConf.to_container(cfg, resolve=True)
    for key in ("mixture", "mix_strategy", "mix_stopping", "mixture_best"):
        base.pop(key, None)
    base.update({k: None for k in WHERE_KEYS})
    base.update(source="auto", columns={})
    for key, value in entry.items():
        if key in SOURCE_KEYS:
            base[key] = OmegaConf.merge(base[key], value) if isinstance(value, dict) and isinstance(
                base.get(key), dict) else value
    return OmegaConf.create(OmegaConf.to_container(OmegaConf.create(base), resolve=True))


def source_task(task, scfg, entry: dict):
    """A copy of ``task`` for one source: the source's data keys, and its row format as ``task.format``."""
    plain = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
             for k, v in task.cfg.items()}
    plain["data"] = OmegaConf.to_container(scfg)
    fmt = entry.get("format")
    if fmt is not None:
        if "format" not in plain["task"]:
            raise ConfigError(f"data.mixture source '{entry['name']}': format={fmt} but task={task.name} has one "
                              f"row format (no task.format); remove it (the file format is the source's "
                              f"source=json|csv|...)")
        run_fmt = plain["task"]["format"]
        if run_fmt not in ("auto", fmt):
            raise ConfigError(f"data.mixture source '{entry['name']}': format={fmt} but task.format={run_fmt} "
                              f"for the run; set task.format=auto to mix row formats")
        plain["task"]["format"] = fmt
    try:
        return type(task)(OmegaConf.create(plain))
    except ConfigError as e:
        raise ConfigError(f"data.mixture source '{entry['name']}': {e}") from None


def _aligned(parts: dict, split: str) -> dict:
    """The datasets of ``parts`` ({name: Dataset}) with the same columns and features: a column a source lacks is
    added as nulls of the other sources' type (e.g. ``messages`` beside Alpaca's ``instruction``)."""
    features = {}
    for name, d in parts.items():
        for col, feat in d.features.items():
            features.setdefault(col, (name, feat))
    out = {}
    for name, d in parts.items():
        for col, (other, feat) in features.items():
            if col not in d.column_names:
                d = d.add_column(col, [None] * len(d), feature=feat)
            elif d.features[col] != feat:
                try:
                    d = d.cast_column(col, feat)
                except Exception:
                    raise DataError(f"data.mixture: column '{col}' of split '{split}' holds {d.features[col]} in "
                                    f"source '{name}' but {feat} in source '{other}'; give the sources the same "
                                    f"types") from None
        out[name] = d.select_columns(list(features))
    return out


def _concat(parts: dict, split: str):
    aligned = _aligned(parts, split)
    return datasets.concatenate_datasets(list(aligned.values())), aligned


def _fraction_indices(n: int, weight: float, rng) -> list[int]:
    """Rows of a source of ``n`` rows drawn at ``weight``: round(weight * n) rows, every row floor(weight) times and
    a sample without replacement of the rest, in row order."""
    k = int(round(weight * n))
    whole, rest = divmod(k, n) if n else (0, 0)
    picked = sorted(rng.choice(n, size=rest, replace=False).tolist()) if rest else []
    return list(range(n)) * whole + picked


def draw(trains: dict, weights: dict, strategy: str, stopping: str, seed: int):
    """The training split drawn from ``trains`` ({name: Dataset}, aligned). Returns (Dataset, {name: rows})."""
    names = [n for n in trains if weights[n] > 0]
    if strategy == "concat":
        picks = {}
        for i, name in enumerate(trains):
            rng = np.random.default_rng([seed, i])  # one stream per source: a source's draw does not depend on others
            picks[name] = _fraction_indices(len(trains[name]), weights[name], rng) if name in names else []
        drawn = [trains[n].select(picks[n]) for n in trains if picks[n]]
        if not drawn:
            raise DataError("data.mixture: the weights draw no training row; raise a weight")
        return datasets.concatenate_datasets(drawn), {n: len(p) for n, p in picks.items()}
    total = sum(weights[n] for n in names)
    index = [datasets.Dataset.from_dict({"_src": [i] * len(trains[n]), "_row": list(range(len(trains[n])))})
             for i, n in enumerate(names)]
    mixed = datasets.interleave_datasets(index, probabilities=[weights[n] / total for n in names], seed=seed,
                                         stopping_strategy=stopping)
    offsets = np.cumsum([0] + [len(trains[n]) for n in names])
    src, row = np.asarray(mixed["_src"]), np.asarray(mixed["_row"])
    combined = datasets.concatenate_datasets([trains[n] for n in names])
    counts = Counter(src.tolist())
    return combined.select((offsets[src] + row).tolist()), {n: counts.get(names.index(n), 0) if n in names else 0
                                                             for n in trains}


def load(cfg, task, seed: int, read_source, apply_caps, stream_source=None):
    """Every source read, checked and capped, the training split drawn, validation / test concatenated. Returns
    (DatasetDict, dropped {split: {"<source>: <reason>": rows}}, capped {split: {kept, set_aside}}, the mixture's
    facts, {source: DatasetDict(validation, test)}, the training stream or None, the streaming facts).

    ``data.streaming=true`` (``stream_source``: pipeline/data/streaming.py through the data stage): each source is a
    stream; the training split is their ``interleave_datasets`` with the weights as probabilities (rows drawn per
    source are then not known up front: ``rows.<source>.train`` is null); the train split of the returned
    DatasetDict holds the sources' heads (the task's look, a scratch tokenizer, finetune-inspect)."""
    streamed = bool(cfg.get("streaming"))
    strategy, stopping = str(cfg.get("mix_strategy") or "concat"), str(cfg.get("mix_stopping") or "first_exhausted")
    if strategy not in STRATEGIES:
        raise ConfigError(f"data.mix_strategy={strategy}: use one of {' | '.join(STRATEGIES)}")
    if stopping not in STOPPING:
        raise ConfigError(f"data.mix_stopping={stopping}: use one of {' | '.join(STOPPING)}")
    items = entries(cfg)
    ignored = [k for k in ("train_file", "validation_file", "test_file", "path") if cfg.get(k)]
    if ignored:
        log.info("data: data.mixture is read; data.%s not used (each source names its own)", ", data.".join(ignored))
    sources, dropped, signature, streams, stream_facts = {}, {}, None, {}, {}
    for entry in items:
        name = entry["name"]
        scfg = source_config(cfg, entry)
        stask = source_task(task, scfg, entry)
        try:
            if streamed:
                ds, streams[name], why, stream_facts[name] = stream_source(scfg, stask, seed)
            else:
                ds, why = read_source(scfg, stask, seed)
            stask.prepare(ds)
        except (ConfigError, DataError) as e:
            raise type(e)(f"data.mixture source '{name}': {e}") from None
        sig = stask.mixture_signature()
        if sig is not None:
            if signature is None:
                signature = (name, sig)
            elif sig != signature[1]:
                what = stask.mixture_signature_name
                raise DataError(f"data.mixture source '{name}' has the {what} {sig} but source '{signature[0]}' has "
                                f"{signature[1]}; sources of one run need the same {what} (map them to one with "
                                f"each source's data, or leave the source out)")
        for split, reasons in why.items():
            for reason, n in reasons.items():
                dropped.setdefault(split, {})[f"{name}: {reason}"] = n
        sources[name] = ds
    splits = ("train", "validation", "test")
    whole = {}
    for split in splits:  # the run's task looks at the combined data, before the caps
        whole[split], _ = _concat({n: d[split] for n, d in sources.items()}, split)
        whole[split], _ = task.clean(split, whole[split])
    task.prepare(datasets.DatasetDict(whole))
    capped, facts = {}, {"strategy": strategy, "seed": seed, "weights": {e["name"]: e["weight"] for e in items},
                         "rows": {}, "available": {}}
    for name, ds in sources.items():
        ds, c = apply_caps(source_config(cfg, next(e for e in items if e["name"] == name)), ds)
        for split, kept in c.items():
            total = capped.setdefault(split, {"kept": 0, "set_aside": 0})
            total["kept"] += kept["kept"]
            total["set_aside"] += kept["set_aside"]
        sources[name] = ds
        facts["available"][name] = {s: len(ds[s]) for s in splits}
    trains = _aligned({n: d["train"] for n, d in sources.items()}, "train")
    if strategy == "interleave" or streamed:
        facts["stopping"] = stopping
    stream, streaming_facts = None, {}
    if streamed:  # the heads stand for the train split; the streams are interleaved by weight
        facts["strategy"] = "interleave"
        train, drawn = datasets.concatenate_datasets(list(trains.values())), {n: None for n in trains}
        own = {n: f["columns"] for n, f in stream_facts.items()}
        stream, streaming_facts = _interleave_streams(streams, own, list(next(iter(trains.values())).column_names),
                                                      facts["weights"], stopping, seed), \
            {"sources": {n: {k: v for k, v in f.items() if k != "columns"} for n, f in stream_facts.items()},
             "columns": list(next(iter(trains.values())).column_names)}
    else:
        train, drawn = draw(trains, facts["weights"], strategy, stopping, seed)
    out, per_source = {"train": train}, {}
    for split in ("validation", "test"):
        out[split], parts = _concat({n: d[split] for n, d in sources.items()}, split)
        for name, d in parts.items():
            per_source.setdefault(name, {})[split] = d
    for name in sources:
        facts["rows"][name] = {"train": drawn[name], **{s: len(per_source[name][s]) for s in ("validation", "test")}}
    log.info("data: mixture (%s, seed %d): %s", facts["strategy"], seed, ", ".join(
        f"{n} {r['train'] if r['train'] is not None else 'streamed'}/{r['validation']}/{r['test']}"
        for n, r in facts["rows"].items()))
    return (datasets.DatasetDict(out), dropped, capped, facts,
            {n: datasets.DatasetDict(p) for n, p in per_source.items()}, stream, streaming_facts)


def _interleave_streams(streams: dict, own: dict, columns: list, weights: dict, stopping: str, seed: int):
    """The sources' training streams with the same columns (a column a source lacks: nulls), interleaved with
    probabilities weight / sum(weights) (sources of weight 0 left out)."""
    names = [n for n in streams if weights[n] > 0]
    parts = []
    for name in names:
        missing = [c for c in columns if c not in own[name]]
        rows = streams[name]

        def fill(batch, missing=missing):
            n = len(next(iter(batch.values())))
            return {**batch, **{c: batch.get(c, [None] * n) for c in missing}}

        parts.append(rows.map(fill, batched=True) if missing else rows)
    total = sum(weights[n] for n in names)
    return datasets.interleave_datasets(parts, probabilities=[weights[n] / total for n in names], seed=seed,
                                        stopping_strategy=stopping)
