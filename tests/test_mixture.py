"""data.mixture on real data (../shared/data): exact rows per source, per-source validation metrics, the seeded
draw, a two-source classification run, and the one-line refusals."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA, compose, needs_shared_data, run_pipeline
from pipeline.errors import ConfigError, DataError

pytestmark = [needs_shared_data, pytest.mark.shared_data]
ALPACA, SST2 = SHARED_DATA / "alpaca", SHARED_DATA / "sst2"


def sft_mixture(weights=(0.5, 1.0), strategy="concat", seed=0):
    """Alpaca rows (instruction/input/output) + chat rows (messages of Alpaca's test file), smoke-sized."""
    a, c = weights
    return ["recipe=gpt2-instruct", "debug=smoke", "task.format=auto", f"data.mix_strategy={strategy}",
            f"seed={seed}",
            f"data.mixture=[{{name: alpaca, format: instruction, train_file: {ALPACA}/train.jsonl, "
            f"validation_file: {ALPACA}/validation.jsonl, test_file: {ALPACA}/test.jsonl, weight: {a}}}, "
            f"{{name: chat, format: messages, train_file: {ALPACA}/test.jsonl, weight: {c}}}]"]


def load(overrides):
    from pipeline.data import load_data
    from pipeline.stages import resolve
    from pipeline.tasks import get_task

    cfg = resolve.resolve(compose(overrides))
    return load_data(cfg.data, get_task(cfg), int(cfg.seed))


def test_alpaca_and_chat_mixture_draws_exact_rows_per_source_and_reports_each_source(tmp_path):
    m = run_pipeline(sft_mixture() + ["trainer.max_steps=4", "num_samples=0"], tmp_path)
    # smoke caps each source to its first 256 / 32 / 32 rows; chat's validation / test are cut from its train file
    assert m["data_mixture"]["rows"] == {"alpaca": {"train": 128, "validation": 32, "test": 32},
                                         "chat": {"train": 256, "validation": 32, "test": 32}}
    assert m["data_mixture"]["weights"] == {"alpaca": 0.5, "chat": 1.0}
    assert m["train_samples"] > 0
    for prefix in ("eval", "test"):
        for source in ("alpaca", "chat"):
            assert m[f"{prefix}_{source}_response_loss"] > 0
        assert m[f"{prefix}_response_loss"] > 0  # the combined one, which picks the best checkpoint
    history = json.loads((tmp_path / "log_history.json").read_text())
    assert any("eval_chat_response_loss" in e for e in history)  # evaluated per source during training too


def test_mixture_rows_keep_each_source_format_and_the_draw_is_seeded():
    loaded = load(sft_mixture())
    train = loaded.raw["train"]
    assert len(train) == 128 + 256
    formats = [("messages" if r["messages"] else "instruction") for r in train]
    assert formats.count("instruction") == 128 and formats.count("messages") == 256
    again, other = load(sft_mixture()), load(sft_mixture(seed=1))
    assert again.raw["train"]["instruction"] == train["instruction"]
    assert other.raw["train"]["instruction"] != train["instruction"]


def test_interleave_draws_with_weights_as_probabilities_and_counts_each_source():
    loaded = load(sft_mixture(weights=(1, 3), strategy="interleave"))
    rows = loaded.mixture["rows"]
    # first_exhausted: stops when chat (drawn 3 times as often) has given all of its 256 rows
    assert rows["chat"]["train"] == 256 and 60 <= rows["alpaca"]["train"] <= 110
    assert len(loaded.raw["train"]) == rows["chat"]["train"] + rows["alpaca"]["train"]
    assert loaded.mixture["stopping"] == "first_exhausted"
    assert load(sft_mixture(weights=(1, 3), strategy="interleave")).raw["train"]["instruction"] == \
        loaded.raw["train"]["instruction"]


def classification_mixture(second_train=f"{SST2}/test.jsonl"):
    return ["recipe=minilm-sst2", "debug=smoke",
            f"data.mixture=[{{name: sst2, train_file: {SST2}/train.jsonl, validation_file: {SST2}/validation.jsonl, "
            f"test_file: {SST2}/test.jsonl, weight: 1}}, {{name: sst2b, train_file: {second_train}, weight: 0.25}}]"]


def test_two_source_classification_mixture_trains_and_scores_each_source(tmp_path):
    m = run_pipeline(classification_mixture() + ["trainer.max_steps=4", "num_samples=0"], tmp_path)
    assert m["data_mixture"]["rows"]["sst2"]["train"] == 256 and m["data_mixture"]["rows"]["sst2b"]["train"] == 64
    for source in ("sst2", "sst2b"):
        assert 0.0 <= m[f"eval_{source}_accuracy"] <= 1.0 and 0.0 <= m[f"test_{source}_accuracy"] <= 1.0
    assert 0.0 <= m["eval_accuracy"] <= 1.0


def test_classification_sources_with_different_label_sets_are_refused_naming_the_source(tmp_path):
    other = tmp_path / "yesno.jsonl"
    other.write_text("".join(json.dumps({"text": f"row {i}", "label": "yes" if i % 2 else "no"}) + "\n"
                             for i in range(40)))
    with pytest.raises(DataError, match=r"^data.mixture source 'sst2b' has the label set \['no', 'yes'\] but "
                                        r"source 'sst2' has \['negative', 'positive'\]"):
        load(classification_mixture(str(other)))


@pytest.mark.parametrize("weights, match", [
    ((-1, 1), r"source 'alpaca': weight=-1 is negative"),
    ((0, 0), r"every weight is 0"),
])
def test_negative_or_all_zero_weights_are_refused_in_one_line(weights, match):
    with pytest.raises(ConfigError, match=match) as e:
        load(sft_mixture(weights=weights))
    assert "\n" not in str(e.value)


def test_source_without_train_split_is_refused():
    with pytest.raises(ConfigError, match=r"data.mixture source 'b' has no train split"):
        load(sft_mixture()[:-1] + [f"data.mixture=[{{name: a, train_file: {ALPACA}/train.jsonl}}, "
                                   f"{{name: b, validation_file: {ALPACA}/validation.jsonl}}]"])


def test_source_whose_rows_do_not_fit_its_format_is_refused_naming_it():
    with pytest.raises(DataError, match=r"^data.mixture source 'plain': split 'train' has no column 'messages'"):
        load(sft_mixture()[:-1] + [f"data.mixture=[{{name: a, train_file: {ALPACA}/train.jsonl}}, "
                                   f"{{name: plain, format: messages, train_file: {SST2}/train.jsonl}}]"])


def test_cli_refusal_is_one_line_exit_2_and_trains_nothing(tmp_path):
    from conftest import run_cli

    out = tmp_path / "run"
    p = run_cli(sft_mixture(weights=(-1, 1)) + [f"hydra.run.dir={out}"])
    assert p.returncode == 2, p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("error:") and "weight=-1 is negative" in line
    assert not (out / "metrics.json").exists() and not (out / "model").exists()


@pytest.mark.parametrize("recipe, folder, train, validation", [
    ("bert-ner", "conll2003", "train.txt", "valid.txt"),
    ("t5-summarization", "dialogsum", "train.jsonl", "validation.jsonl"),
    ("bert-qa", "squad", "train.jsonl", "validation.jsonl"),
    ("t5-qa", "squad", "train.jsonl", "validation.jsonl"),
    ("t5-translation", "multi30k", "train.jsonl", "validation.jsonl"),
])
def test_every_task_trains_on_a_two_source_mixture_and_scores_each_source(recipe, folder, train, validation,
                                                                         tmp_path):
    d = SHARED_DATA / folder
    m = run_pipeline([f"recipe={recipe}", "debug=smoke", "trainer.max_steps=2", "num_samples=0",
                      "data.max_train_samples=32", "data.max_eval_samples=8", "data.max_test_samples=8",
                      f"data.mixture=[{{name: a, train_file: {d}/{train}, validation_file: {d}/{validation}}}, "
                      f"{{name: b, train_file: {d}/test.{train.split('.')[-1]}, weight: 0.5}}]"], tmp_path)
    assert m["data_mixture"]["rows"] == {"a": {"train": 32, "validation": 8, "test": 8},
                                         "b": {"train": 16, "validation": 8, "test": 8}}
    assert "eval_a_loss" in m and "eval_b_loss" in m and "test_b_loss" in m
