"""Data stage units: CoNLL reader, label alignment, block grouping, synthetic data, column mapping, bad input."""

import json

import pytest

from conftest import compose
from pipeline.data import load_raw as load_raw_dropped
from pipeline.errors import DataError
from pipeline.tasks.ner import align_labels, sort_labels

CONLL = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"


def load_raw(data, task_name, seed):
    """The data stage for ``task_name`` (its task object as a run builds it); the rows, without the drop counts."""
    from pipeline.tasks import get_task

    return load_raw_dropped(data, get_task(compose([f"task={task_name}"])), seed)[0]


def data_cfg(**kw):
    cfg = compose([])
    for k, v in kw.items():
        cfg.data[k] = v
    return cfg.data


def test_conll_reader_skips_docstart_and_splits_sentences(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text(CONLL)
    ds = load_raw(data_cfg(train_file=str(f), validation_file=str(f), test_file=str(f), source="auto"), "ner", 0)
    assert ds["train"]["tokens"] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert ds["train"]["tags"] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]


def test_conll_tab_separated_two_columns(tmp_path):
    f = tmp_path / "a.tsv"
    f.write_text("New York\tB-LOC\nis\tO\n\nhi\tO\n")
    cfg = data_cfg(train_file=str(f), validation_file=str(f), test_file=str(f), source="conll")
    cfg.conll.separator = "\t"
    ds = load_raw(cfg, "ner", 0)
    assert ds["train"][0] == {"tokens": ["New York", "is"], "tags": ["B-LOC", "O"]}


def test_conll_wrong_column_count_names_the_line(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("EU NNP B-NP B-ORG\nrejects B-VP O\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected 4 columns"):
        load_raw(data_cfg(train_file=str(f), source="conll"), "ner", 0)


def test_align_labels_first_subword_only_and_all_tokens():
    # "[CLS] Washing ##ton visited Paris [SEP]" -> word ids
    word_ids = [None, 0, 0, 1, 2, None]
    assert align_labels(word_ids, [1, 0, 3]) == [-100, 1, -100, 0, 3, -100]
    assert align_labels(word_ids, [1, 0, 3], label_all_tokens=True, b_to_i={1: 2}) == [-100, 1, 2, 0, 3, -100]


def test_sort_labels_o_first_then_by_type():
    assert sort_labels(["I-PER", "O", "B-LOC", "B-PER"]) == ["O", "B-LOC", "B-PER", "I-PER"]


def test_packing_keeps_examples_whole_or_wraps_them():
    import datasets

    from pipeline.tasks.packing import pack

    d = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5], [6, 7, 8]], "labels": [[1, 2, 3], [4, 5], [6, 7, 8]]})
    bfd = pack(d, 5, "bfd")  # best-fit decreasing: whole examples, positions restart at each
    assert sorted(bfd["input_ids"]) == [[1, 2, 3, 4, 5], [6, 7, 8]]
    assert sorted(bfd["position_ids"]) == [[0, 1, 2], [0, 1, 2, 0, 1]]
    assert pack(d, 3, "wrapped")["input_ids"] == [[1, 2, 3], [4, 5, 6], [7, 8]]  # joined and cut


@pytest.mark.parametrize("task", ["ner", "generation", "summarization"])
def test_synthetic_data_is_deterministic(task):
    a = load_raw(data_cfg(), task, 0)
    b = load_raw(data_cfg(), task, 0)
    c = load_raw(data_cfg(), task, 1)
    assert a["train"][:5] == b["train"][:5] and a["train"][:5] != c["train"][:5]
    assert [len(a[s]) for s in ("train", "validation", "test")] == [2000, 300, 300]


def test_jsonl_with_column_mapping_and_seeded_split(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"dialogue": f"doc {i}", "summ": f"sum {i}", "x": i}) + "\n" for i in range(50)))
    cfg = data_cfg(train_file=str(f), source="auto")
    cfg.columns = {"document": "dialogue", "summary": "summ"}
    ds = load_raw(cfg, "summarization", 0)
    assert ds["train"].column_names == ["document", "summary"]
    assert (len(ds["train"]), len(ds["validation"]), len(ds["test"])) == (40, 5, 5)
    again = load_raw(cfg, "summarization", 0)
    assert ds["test"]["document"] == again["test"]["document"]


def test_missing_column_is_a_clear_error(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text_x": "a"}) + "\n")
    with pytest.raises(DataError, match=r"no column 'text'.*data.columns.text"):
        load_raw(data_cfg(train_file=str(f)), "generation", 0)


def test_tokens_tags_length_mismatch(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n" for _ in range(5)))
    with pytest.raises(DataError, match="2 tokens but 1 tags"):
        load_raw(data_cfg(train_file=str(f), source="json"), "ner", 0)


def test_empty_split_after_caps(tmp_path):
    with pytest.raises(DataError, match="empty"):
        load_raw(data_cfg(max_test_samples=0), "ner", 0)


def test_json_splits_with_different_extra_columns(tmp_path):
    """DialogSum's test split carries summary2/topic2 columns the train split lacks: each split is read alone."""
    tr, te = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    tr.write_text("".join(json.dumps({"document": f"d{i}", "summary": f"s{i}"}) + "\n" for i in range(10)))
    te.write_text("".join(json.dumps({"document": f"t{i}", "summary": f"s{i}", "summary2": "x"}) + "\n" for i in range(4)))
    ds = load_raw(data_cfg(train_file=str(tr), validation_file=str(te), test_file=str(te), source="auto"),
                  "summarization", 0)
    assert ds["test"].column_names == ["document", "summary"] and len(ds["test"]) == 4
