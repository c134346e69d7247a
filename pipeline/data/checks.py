"""Row checks shared by the tasks' ``clean``: drop rows that cannot be used, counted per reason (never silently)."""

from __future__ import annotations

from pipeline.errors import DataError


def drop_rows(d, columns, keep, reason: str):
    """(``d`` without the rows for which ``keep(row)`` is false, {reason: number dropped}). Only ``columns`` are read."""
    n = len(d)
    if n == 0:
        return d, {}

    def mask(batch):
        rows = [dict(zip(columns, values)) for values in zip(*(batch[c] for c in columns))]
        return [bool(keep(r)) for r in rows]

    kept = d.filter(mask, batched=True, input_columns=None, desc=f"drop rows: {reason}")
    dropped = n - len(kept)
    return kept, ({reason: dropped} if dropped else {})


def string_lists(d, split: str, columns) -> None:
    """Each of ``columns`` must hold lists of strings (a list-of-int column is a label-id file without names)."""
    for col in columns:
        feature = d.features[col]
        inner = getattr(feature, "feature", None)
        if inner is None and getattr(feature, "dtype", None) in ("string", "large_string"):
            raise DataError(f"split '{split}' column '{col}' holds text, not a list of words (a CSV cell cannot hold "
                            f"a list); give word-tagging data as JSON lines ({{\"tokens\": [...], \"tags\": [...]}} "
                            f"per sentence) or CoNLL columns (one 'word tag' line per word)")
        if getattr(inner, "dtype", None) not in ("string", "large_string", "null"):  # null: all empty
            raise DataError(f"split '{split}' column '{col}' must hold lists of strings, found {feature}; "
                            f"write words and tags as JSON strings")
