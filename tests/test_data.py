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


# -- data never changed silently ------------------------------------------------------------------------------------
BOM = "\ufeff"


@pytest.mark.parametrize("name,text,task,column,first", [
    ("train.conll", BOM + "EU B-ORG\nrejects O\n\nBob B-PER\n", "ner", "tokens", ["EU", "rejects"]),
    ("train.txt", BOM + "first line here\n\nsecond paragraph\n", "generation", "text", "first line here"),
    ("train.csv", BOM + "document,summary\nd1,s1\nd2,s2\nd3,s3\n", "summarization", "document", "d1"),
    ("train.jsonl", BOM + '{"document": "d1", "summary": "s1"}\n{"document": "d2", "summary": "s2"}\n'
     '{"document": "d3", "summary": "s3"}\n', "summarization", "document", "d1"),
])
def test_byte_order_mark_is_stripped(tmp_path, name, text, task, column, first):
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    ds = load_raw(data_cfg(train_file=str(f), validation_file=str(f), test_file=str(f)), task, 0)
    assert ds["train"][0][column] == first


def test_tab_separator_typed_on_the_command_line_reaches_the_reader(tmp_path):
    """data.conll.separator='\\t' in bash is a backslash and a t in Hydra; the reader splits on the tab."""
    from pipeline.stages.resolve import resolve

    f = tmp_path / "a.tsv"
    f.write_text("New York\tB-LOC\nis\tO\n\nhi\tO\n")
    overrides = [f"data.{k}={f}" for k in ("train_file", "validation_file", "test_file")]
    cfg = resolve(compose(["task=ner", "data.source=conll", "data.conll.separator=\\t", *overrides]))
    ds = load_raw(cfg.data, "ner", 0)
    assert ds["train"][0] == {"tokens": ["New York", "is"], "tags": ["B-LOC", "O"]}


def test_files_named_win_over_the_recipe_hub_dataset_offline(tmp_path):
    """recipe=bert-ner names a Hub dataset (and its column mapping); the files named are read instead, offline."""
    from pipeline.stages.resolve import resolve

    f = tmp_path / "train.conll"
    f.write_text("EU B-ORG\nrejects O\n\nBob B-PER\n\nParis B-LOC\n")
    cfg = resolve(compose(["recipe=bert-ner", f"data.train_file={f}", f"data.validation_file={f}",
                           f"data.test_file={f}"]))
    ds = load_raw(cfg.data, "ner", 0)
    assert ds["train"]["tokens"] == [["EU", "rejects"], ["Bob"], ["Paris"]]


def test_tilde_in_a_data_path_expands(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": f"t {i}"}) + "\n" for i in range(10)))
    ds = load_raw(data_cfg(train_file="~/d.jsonl"), "generation", 0)
    assert len(ds["train"]) + len(ds["validation"]) + len(ds["test"]) == 10


def test_dropped_rows_are_counted_per_split_with_the_reason(tmp_path, caplog):
    from pipeline.tasks import get_task

    rows = [{"document": "d", "summary": "s"}] * 6 + [{"document": "", "summary": "s"},
                                                      {"document": "d", "summary": None}]
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level("WARNING", logger="pipeline"):
        ds, dropped, _ = load_raw_dropped(data_cfg(train_file=str(f), validation_file=str(f), test_file=str(f)),
                                       get_task(compose(["task=summarization"])), 0)
    assert dropped == {s: {"empty or non-string text": 2} for s in ("train", "validation", "test")}
    assert len(ds["train"]) == 6 and "dropped from split 'train': 2 rows (empty or non-string text)" in caplog.text


def test_ner_rows_with_null_words_or_tags_are_dropped_and_counted(tmp_path):
    from pipeline.tasks import get_task

    rows = [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}] * 6 + [{"tokens": None, "tags": None},
                                                                         {"tokens": ["a"], "tags": [None]}]
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds, dropped, _ = load_raw_dropped(data_cfg(train_file=str(f), validation_file=str(f), test_file=str(f)),
                                   get_task(compose(["task=ner"])), 0)
    assert dropped["train"] == {"missing tokens or tags": 2} and len(ds["train"]) == 6


def _tokenized_with_counts(overrides, tmp_path):
    """The data + tokenise stages of a smoke run: (tokenized, cut counts)."""
    from pipeline.models import load as models
    from pipeline.stages.resolve import resolve
    from pipeline.tasks import get_task

    cfg = resolve(compose(["debug=smoke", *overrides]))
    task = get_task(cfg)
    raw, _, _ = load_raw_dropped(cfg.data, task, 0)
    tok, model = models.load(cfg, task, raw)
    return task.cut_counts(task.preprocess(raw, tok, model))


def test_examples_cut_at_max_length_are_counted_per_split(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="pipeline"):
        tokenized, cut = _tokenized_with_counts(["recipe=bert-ner", "task.max_length=8"], tmp_path)
    assert set(cut) == {"train", "validation", "test"} and cut["train"]["task.max_length"] > 0
    assert all(len(ids) <= 8 for ids in tokenized["train"]["input_ids"])
    assert not any(c.startswith("_cut_") for c in tokenized["train"].column_names)  # counted, then removed
    assert "examples were cut at task.max_length=8 tokens" in caplog.text
    _, none = _tokenized_with_counts(["recipe=bert-ner", "task.max_length=128"], tmp_path)
    assert none == {}


def test_source_and_target_cuts_are_counted_separately(tmp_path):
    _, cut = _tokenized_with_counts(["recipe=t5-summarization", "task.max_source_length=16",
                                     "task.max_target_length=64"], tmp_path)
    assert cut["train"]["task.max_source_length"] > 0 and "task.max_target_length" not in cut["train"]
    _, cut = _tokenized_with_counts(["recipe=t5-summarization", "task.max_source_length=512",
                                     "task.max_target_length=4"], tmp_path)
    assert cut["train"]["task.max_target_length"] > 0 and "task.max_source_length" not in cut["train"]


def test_documents_longer_than_a_block_are_split_and_counted(tmp_path):
    tokenized, cut = _tokenized_with_counts(["recipe=gpt2-generation", "task.block_size=30"], tmp_path)
    assert cut["train"]["documents_split"] > 0 and "examples_truncated" not in cut["train"]  # documents: every token
    assert max(len(b) for b in tokenized["train"]["input_ids"]) <= 30


def test_truncation_counts_reach_metrics_json(tmp_path):
    from conftest import run_pipeline

    run_pipeline(["recipe=bert-ner", "debug=smoke", "task.max_length=8", "trainer.max_steps=2", "num_samples=1",
                  "data.max_train_samples=32", "data.max_eval_samples=8", "data.max_test_samples=8"], tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["data_truncated"]["train"]["task.max_length"] > 0


def test_splits_in_different_formats_are_each_read_in_their_own(tmp_path):
    """A JSON-lines train file beside CSV validation / test files (and CoNLL beside JSON for word tagging): each file
    is read in the format its extension names, not the first file's."""
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": f"good film {i}", "label": i % 2}) + "\n"
                                                  for i in range(20)))
    (tmp_path / "dev.csv").write_text("text,label\n" + "".join(f'"bad, dull film {i}",{i % 2}\n' for i in range(6)))
    ds = load_raw(data_cfg(train_file=str(tmp_path / "train.jsonl"), validation_file=str(tmp_path / "dev.csv"),
                           test_file=str(tmp_path / "dev.csv"), source="auto"), "classification", 0)
    assert len(ds["train"]) == 20 and ds["validation"][0] == {"text": "bad, dull film 0", "label": "0"}
    (tmp_path / "train.conll").write_text(CONLL)
    (tmp_path / "dev.jsonl").write_text(json.dumps({"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}) + "\n")
    ds = load_raw(data_cfg(train_file=str(tmp_path / "train.conll"), validation_file=str(tmp_path / "dev.jsonl"),
                           test_file=str(tmp_path / "dev.jsonl"), source="auto"), "ner", 0)
    assert ds["train"][0]["tokens"] == ["EU", "rejects", "German"] and ds["validation"][0]["tags"] == ["B-ORG", "O"]
