"""Tag schemes of word-tagging data: IOB2, IOB1 (converted to IOB2, counted), BIOES, or plain tags (scored per token,
not as entities), detected from the training split and stated in metrics.json."""

from __future__ import annotations

import json
import random

import pytest

from conftest import SHARED_DATA, needs_shared_data, run_pipeline
from pipeline.tasks.ner import iob1_to_iob2, tag_scheme

SMOKE = ["recipe=bert-ner", "debug=smoke"]


@pytest.mark.parametrize("rows,scheme", [
    ([["B-PER", "I-PER", "O", "B-LOC"]], "IOB2"),
    ([["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]], "IOB1"),
    ([["O", "B-ORG", "I-ORG", "O"], ["I-MISC", "O"]], "IOB1"),  # one entity starting with I- is enough
    ([["S-PER", "O", "B-LOC", "E-LOC"]], "BIOES"),
    ([["NNP", "VBZ", "JJ", "NN", "."]], "plain"),
    ([["B-PER", "NN"]], "plain"),  # mixed: not an entity scheme
    ([["O", "O"]], "plain"),
])
def test_tag_scheme_of_the_training_tags(rows, scheme):
    assert tag_scheme(rows) == scheme


def test_iob1_becomes_iob2_where_an_entity_starts_with_inside():
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG"]) == (
        ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG"], 3)
    assert iob1_to_iob2(["B-PER", "I-PER"]) == (["B-PER", "I-PER"], 0)


def _to_iob1(tags):
    """IOB2 -> IOB1: B-X stays only right after another X entity."""
    out, prev = [], "O"
    for t in tags:
        out.append("I-" + t[2:] if t.startswith("B-") and prev[2:] != t[2:] else t)
        prev = t
    return out


def test_iob1_files_train_as_iob2_and_metrics_json_says_so(tmp_path):
    from pipeline.tasks import get_task

    from conftest import compose

    task, rng = get_task(compose(["task=ner"])), random.Random(0)
    for split, n in (("train", 256), ("validation", 32), ("test", 32)):
        rows = [task.synthetic_row(rng, "train" if split != "test" else "test") for _ in range(n)]
        lines = ["\n".join(f"{w} {t}" for w, t in zip(r["tokens"], _to_iob1(r["tags"]))) for r in rows]
        (tmp_path / f"{split}.conll").write_text("\n\n".join(lines) + "\n")
    files = [f"data.{k}_file={tmp_path / s}.conll" for k, s in (("train", "train"), ("validation", "validation"),
                                                                 ("test", "test"))]
    metrics = run_pipeline(SMOKE + files, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["tag_scheme"] == "IOB1" and saved["tags_converted"] > 50
    assert metrics["eval_f1"] > 0.2 and "eval_PER_f1" in metrics  # entity scores on the converted tags


@needs_shared_data
@pytest.mark.shared_data
def test_pos_column_of_real_conll_is_scored_per_token_not_as_entities(tmp_path):
    conll = SHARED_DATA / "conll2003"
    files = [f"data.train_file={conll / 'train.txt'}", f"data.validation_file={conll / 'valid.txt'}",
             f"data.test_file={conll / 'test.txt'}", "data.conll.tag_column=1"]
    metrics = run_pipeline(SMOKE + files, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["tag_scheme"] == "plain" and saved["tags_converted"] == 0
    assert {"test_accuracy", "test_macro_f1", "test_f1"} <= set(metrics)
    assert metrics["test_f1"] == metrics["test_macro_f1"] and "test_precision" not in metrics  # no entity scores
    assert "test_f1_NNP" in metrics and metrics["test_accuracy"] > 0.1
