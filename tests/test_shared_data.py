"""The real datasets in ../shared/data read with the pipeline's own loaders (skipped when the folder is absent)."""

import json

import pytest

from conftest import SHARED_DATA, compose, needs_shared_data, run_pipeline
from pipeline.data import load_raw as load_raw_dropped


def load_raw(data, task_name, seed):
    from pipeline.tasks import get_task

    return load_raw_dropped(data, get_task(compose([f"task={task_name}"])), seed)[0]

pytestmark = [needs_shared_data, pytest.mark.shared_data]


def test_conll2003_local_split_sizes_and_labels():
    ds = load_raw(compose(["data=conll2003-local", f"data.dir={SHARED_DATA / 'conll2003'}"]).data, "ner", 0)
    assert [len(ds[s]) for s in ("train", "validation", "test")] == [14041, 3250, 3453]
    tags = {t for row in ds["train"]["tags"] for t in row}
    assert tags == {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"}


def test_dialogsum_and_tinyshakespeare_load():
    dsum = load_raw(compose(["data=dialogsum-local", f"data.dir={SHARED_DATA / 'dialogsum'}"]).data,
                    "summarization", 0)
    assert [len(dsum[s]) for s in ("train", "validation", "test")] == [12460, 500, 500]
    text = load_raw(compose(["data=tinyshakespeare",
                             f"data.train_file={SHARED_DATA / 'tinyshakespeare' / 'input.txt'}"]).data, "generation", 0)
    assert len(text["train"]) > 5 * len(text["test"]) > 0


def test_tiny_ner_run_on_real_conll(tmp_path):
    """A scratch BERT trains on 400 real CoNLL sentences and gets a finite F1 from real predictions."""
    m = run_pipeline(["recipe=bert-ner", "debug=smoke", "data=conll2003-local", "data.source=conll",
                      f"data.dir={SHARED_DATA / 'conll2003'}", "data.max_train_samples=400",
                      "data.max_eval_samples=100", "data.max_test_samples=100"], tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= saved["test_f1"] <= 1.0 and saved["test_loss"] == pytest.approx(m["test_loss"])
    assert saved["train_samples"] == 400


def test_minilm_ner_recipe_learns_real_conll(tmp_path):
    """recipe=minilm-ner as shipped (pretrained MiniLM, real CoNLL files), capped to 480 sentences and 1 epoch:
    the training loss falls and the model finds real entities (the full run's figures are in the README)."""
    m = run_pipeline(["recipe=minilm-ner", f"data.dir={SHARED_DATA / 'conll2003'}", "data.max_train_samples=480",
                      "data.max_eval_samples=100", "data.max_test_samples=100", "trainer.num_train_epochs=1",
                      "trainer.logging_steps=5", "logger=none", "quiet=true"], tmp_path)
    losses = [row["loss"] for row in json.loads((tmp_path / "log_history.json").read_text()) if "loss" in row]
    assert len(losses) >= 5 and losses[-1] < 0.7 * losses[0], losses
    assert m["test_f1"] > 0.2, m["test_f1"]


def test_squad_local_splits_load_with_every_answer_in_place():
    ds, dropped = load_raw_dropped(compose(["data=squad-local", f"data.dir={SHARED_DATA / 'squad'}"]).data,
                                   _task("qa"), 0)
    assert [len(ds[s]) for s in ("train", "validation", "test")] == [8582, 399, 1589] and dropped == {}
    assert ds["validation"][0]["answers"]["text"][0] == "the United Nations"


def _task(name):
    from pipeline.tasks import get_task

    return get_task(compose([f"task={name}"]))


def _losses(run_dir):
    return [row["loss"] for row in json.loads((run_dir / "log_history.json").read_text()) if "loss" in row]


def test_minilm_squad_recipe_learns_real_squad(tmp_path):
    """recipe=minilm-squad as shipped (pretrained MiniLM, real SQuAD files), capped to 160 questions and 1 epoch:
    the training loss falls and the answers overlap the references (the full run: recipes/README.md)."""
    m = run_pipeline(["recipe=minilm-squad", f"data.dir={SHARED_DATA / 'squad'}", "data.max_train_samples=160",
                      "data.max_eval_samples=32", "data.max_test_samples=32", "trainer.num_train_epochs=1",
                      "trainer.learning_rate=2e-4", "trainer.logging_steps=1", "logger=none", "quiet=true",
                      "num_samples=0"], tmp_path)
    losses = _losses(tmp_path)
    assert len(losses) >= 8 and sum(losses[-3:]) / 3 < 0.85 * losses[0], losses
    assert m["test_f1"] > 0.0, m["test_f1"]


def test_scratch_t5_generative_qa_trains_on_real_squad(tmp_path):
    """A from-config T5 on 256 real SQuAD questions: generated answers are scored against the real references and
    the training loss falls."""
    m = run_pipeline(["recipe=t5-qa", "debug=smoke", "data=squad-local", "data.source=json",
                      f"data.dir={SHARED_DATA / 'squad'}", "data.max_train_samples=256", "data.max_eval_samples=32",
                      "data.max_test_samples=32", "task.max_source_length=256", "trainer.num_train_epochs=2",
                      "trainer.logging_steps=4", "num_samples=0"], tmp_path)
    losses = _losses(tmp_path)
    assert sum(losses[-3:]) / 3 < 0.9 * losses[0], losses
    assert 0.0 <= m["test_f1"] <= 1.0 and m["train_samples"] == 256
