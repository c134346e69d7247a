"""Data stage: raw DatasetDict (train / validation / test) with the task's canonical columns.

Canonical columns: ner -> tokens, tags (lists of strings); generation -> text; summarization -> document, summary.
"""

from __future__ import annotations

from pipeline.data.readers import data_files, infer_source, read_conll, read_files, read_hub
from pipeline.errors import DataError

COLUMNS = {"ner": ("tokens", "tags"), "generation": ("text",), "summarization": ("document", "summary")}
SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation"}


def load_raw(cfg, task_name: str, seed: int):
    """Read ``cfg.data`` for ``task_name``: canonical columns, three splits, caps applied."""
    import datasets

    source = infer_source(cfg, task_name)
    if source == "synthetic":
        from pipeline.data.synthetic import generate

        ds = generate(task_name, cfg.synthetic, seed)
    elif source == "hub":
        if not cfg.get("path"):
            raise DataError("data.source=hub needs data.path=<dataset id>")
        ds = read_hub(cfg)
    else:
        files = data_files(cfg)
        if "train" not in files:
            raise DataError(f"data.source={source} needs data.train_file=<path>")
        ds = read_conll(cfg, files) if source == "conll" else read_files(source, cfg, files)
    ds = datasets.DatasetDict({SPLIT_ALIASES.get(k, k): v for k, v in ds.items()})
    mapping = {} if source == "synthetic" else dict(cfg.columns or {})  # generated data is canonical already
    ds = _canonical_columns(ds, COLUMNS[task_name], mapping)
    ds = _complete_splits(ds, cfg, seed)
    for split, key in (("train", "max_train_samples"), ("validation", "max_eval_samples"),
                       ("test", "max_test_samples")):
        if cfg.get(key) is not None:
            ds[split] = ds[split].select(range(min(int(cfg[key]), len(ds[split]))))
    ds = _drop_empty(ds, task_name)
    for split, d in ds.items():
        if len(d) == 0:
            raise DataError(f"data split '{split}' is empty after loading/filtering; check the file or the "
                            f"max_*_samples caps")
    return ds


def _canonical_columns(ds, wanted: tuple, mapping: dict):
    import datasets

    out = {}
    for split, d in ds.items():
        renames = {}
        for canon in wanted:
            src = mapping.get(canon, canon)
            if src not in d.column_names:
                raise DataError(f"split '{split}' has no column '{src}' (needed as '{canon}'); columns are "
                                f"{d.column_names}; set data.columns.{canon}=<column>")
            renames[src] = canon
        d = d.select_columns(list(renames)).rename_columns({k: v for k, v in renames.items() if k != v})
        if "tags" in wanted and isinstance(d.features["tags"], datasets.Sequence | datasets.List) \
                and isinstance(d.features["tags"].feature, datasets.ClassLabel):
            names = d.features["tags"].feature.names
            d = d.map(lambda b: {"tags": [[names[i] for i in row] for row in b["tags"]]}, batched=True,
                      features=datasets.Features({**d.features, "tags": datasets.List(datasets.Value("string"))}),
                      desc="tag ids -> names")
        out[split] = d
    return datasets.DatasetDict(out)


def _complete_splits(ds, cfg, seed: int):
    import datasets

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


def _drop_empty(ds, task_name: str):
    """Rows the task cannot use (blank text, empty sentences) are dropped; tokens/tags mismatches are errors."""
    if task_name == "ner":
        for split, d in ds.items():
            for col in ("tokens", "tags"):
                inner = getattr(d.features[col], "feature", None)
                if getattr(inner, "dtype", None) not in ("string", "large_string", "null"):  # null: all empty
                    raise DataError(f"split '{split}' column '{col}' must hold lists of strings, found "
                                    f"{d.features[col]}; write words and IOB2 tags as JSON strings")
            bad = [i for i, (t, g) in enumerate(zip(d["tokens"], d["tags"])) if len(t) != len(g)]
            if bad:
                raise DataError(f"split '{split}' row {bad[0]}: {len(d[bad[0]]['tokens'])} tokens but "
                                f"{len(d[bad[0]]['tags'])} tags ({len(bad)} rows like this); every token needs "
                                f"exactly one tag")
        return ds.filter(lambda b: [len(t) > 0 for t in b["tokens"]], batched=True, desc="drop empty")
    cols = COLUMNS[task_name]
    return ds.filter(lambda b: [all(isinstance(b[c][i], str) and b[c][i].strip() for c in cols)
                                for i in range(len(b[cols[0]]))], batched=True, desc="drop empty")
