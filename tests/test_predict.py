"""finetune-predict on tiny trained runs (debug=smoke, one run per task, trained once per module): NER spans line up
with the input text, generation, summarization and translation return text, classification returns a label and its
probability (single texts and text pairs), batch files round-trip, bad input fails in one line.
"""

import csv
import json
import subprocess
import sys

import pytest

from conftest import ROOT, compose

RECIPES = {"ner": ["recipe=bert-ner"], "generation": ["recipe=gpt2-generation"],
           "summarization": ["recipe=t5-summarization"],
           "classification": ["recipe=minilm-sst2", "trainer.num_train_epochs=8"],  # past the plateau: it learns
           "pairs": ["recipe=minilm-sst2", "task.synthetic_pairs=true", "num_samples=0"],
           "translation": ["recipe=t5-translation"],
           "qa": ["recipe=bert-qa"], "generative-qa": ["recipe=t5-qa"]}
SENTENCES = ["Angela Merkel visited Paris in May .", "the old fox met John Smith near Berlin",
             "Dr. Grace Moreno-Costa (ACME Corp.) flew to São Paulo, then to New York!", "no entities here at all"]


def train(overrides, run_dir):
    """A finished run directory as ``finetune`` leaves it: .hydra/config.yaml (written by Hydra) + the run's files."""
    from omegaconf import OmegaConf

    from pipeline.stages.run import run

    cfg = compose(overrides)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    run(cfg, run_dir)
    return run_dir


def labels(predictor):
    return {l[2:] for l in predictor.model.config.id2label.values() if l != "O"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {task: train([*overrides, "debug=smoke"], tmp_path_factory.mktemp(task))
            for task, overrides in RECIPES.items()}


@pytest.fixture(scope="module")
def ner(runs):
    from pipeline.commands.predict import Predictor

    return Predictor(runs["ner"])


def _assert_spans(texts, preds, labels):
    assert len(preds) == len(texts)
    for text, ents in zip(texts, preds):
        for e in ents:
            assert text[e["start"]:e["end"]] == e["word"] and e["word"].strip() == e["word"] != ""
            assert e["entity"] in labels and 0.0 <= e["score"] <= 1.0
        starts = [e["start"] for e in ents]
        assert starts == sorted(starts) and all(a["end"] <= b["start"] for a, b in zip(ents, ents[1:]))


def test_ner_spans_line_up_with_the_text(ner):
    preds = ner.predict(SENTENCES)
    _assert_spans(SENTENCES, preds, labels(ner))
    assert sum(len(p) for p in preds) > 0, "the trained tiny model finds entities in sentences like its data"


def test_ner_long_text_is_read_in_overlapping_windows(ner):
    """Longer than the run's task.max_length (64 sub-words): every part is read and offsets stay exact."""
    text = " ".join(["Angela Merkel visited Paris in May ."] * 30)
    [ents] = ner.predict([text])
    _assert_spans([text], [ents], labels(ner))
    assert ents and max(e["end"] for e in ents) > len(text) // 2


def test_generation_returns_text_and_seed_repeats(runs):
    from pipeline.commands.predict import Predictor

    p = Predictor(runs["generation"])
    a = p.predict(["To be or not", "the old", ""], seed=3, generation={"do_sample": True, "max_new_tokens": 8})
    b = p.predict(["To be or not", "the old", ""], seed=3, generation={"do_sample": True, "max_new_tokens": 8})
    assert a == b and len(a) == 3 and all(isinstance(t, str) for t in a) and any(t.strip() for t in a)  # "": EOS first
    greedy = p.predict(["To be or not"], generation={"do_sample": False, "max_new_tokens": 6})
    assert greedy == p.predict(["To be or not"], generation={"do_sample": False, "max_new_tokens": 6})


def test_summarization_matches_the_evaluate_stage_samples(runs):
    """samples.jsonl (evaluate stage, in-memory model) and finetune-predict (saved model) decode the same way."""
    from pipeline.commands.predict import Predictor

    rows = [json.loads(l) for l in (runs["summarization"] / "samples.jsonl").read_text().splitlines()]
    preds = Predictor(runs["summarization"]).predict([r["document"] for r in rows])
    assert preds == [r["generated"] for r in rows] and all(isinstance(p, str) for p in preds)


def _samples(run_dir):
    return [json.loads(l) for l in (run_dir / "samples.jsonl").read_text().splitlines()]


def _assert_answer_spans(rows, preds):
    assert len(preds) == len(rows)
    for row, p in zip(rows, preds):
        assert set(p) == {"answer", "start", "end", "score"} and 0.0 <= p["score"] <= 1.0
        assert row["context"][p["start"]:p["end"]] == p["answer"]


def test_qa_answers_are_spans_and_match_the_evaluate_stage(runs):
    """Saved model + finetune-predict give the evaluate stage's answers (in-memory model), every one a span of its
    context; the smoke run learned (validation F1, generated questions like the training ones)."""
    from pipeline.commands.predict import Predictor

    assert json.loads((runs["qa"] / "metrics.json").read_text())["eval_f1"] > 0.25
    rows = _samples(runs["qa"])
    p = Predictor(runs["qa"])
    preds = p.predict([{"question": r["question"], "context": r["context"]} for r in rows])
    assert preds == [r["predicted"] for r in rows]
    _assert_answer_spans(rows, preds)


def test_qa_long_context_is_read_in_windows(runs):
    """A context of ~10 windows of the run's 64 tokens: the answer found in the last part is a span of it."""
    from pipeline.commands.predict import Predictor

    filler = "The old fox chases the stone near the river. " * 40
    context = filler + "Angela Merkel visited Paris on Monday."
    [got] = Predictor(runs["qa"]).predict([{"question": "Who visited Paris?", "context": context}])
    _assert_answer_spans([{"context": context}], [got])
    assert got["start"] > len(filler) - 100  # nothing like a person near the start: the answer comes from the end


def test_qa_command_line_text_context_and_file(runs, tmp_path):
    row = _samples(runs["qa"])[0]
    out = _cli(runs["qa"], "--text", row["question"], "--context", row["context"])
    assert out.returncode == 0, out.stderr
    [line] = [json.loads(l) for l in out.stdout.splitlines()]
    assert line["question"] == row["question"] and line["answer"] == row["predicted"]
    src = tmp_path / "questions.csv"
    with open(src, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "question", "context"])
        w.writeheader()
        w.writerows({"id": i, "question": r["question"], "context": r["context"]}
                    for i, r in enumerate(_samples(runs["qa"])))
    out = _cli(runs["qa"], "--file", src, "--out", tmp_path / "answers.jsonl")
    assert out.returncode == 0, out.stderr
    got = [json.loads(l) for l in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [g["answer"] for g in got] == [r["predicted"] for r in _samples(runs["qa"])]
    missing = _cli(runs["qa"], "--text", "Who?")
    assert missing.returncode == 2 and "--context" in missing.stderr


def test_generative_qa_matches_the_evaluate_stage_and_learns(runs):
    from pipeline.commands.predict import Predictor

    rows = _samples(runs["generative-qa"])
    preds = Predictor(runs["generative-qa"]).predict([{"question": r["question"], "context": r["context"]}
                                                      for r in rows])
    assert preds == [r["generated"] for r in rows] and all(isinstance(p, str) for p in preds)
    losses = [h["eval_loss"] for h in json.loads((runs["generative-qa"] / "log_history.json").read_text())
              if "eval_loss" in h]
    assert losses[-2] < losses[0]  # per epoch (the last row is the best checkpoint's evaluation)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.commands.predict", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_batch_files_round_trip(runs, tmp_path):
    docs = [json.loads(l)["document"] for l in (runs["summarization"] / "samples.jsonl").read_text().splitlines()]
    src = tmp_path / "dialogues.jsonl"
    src.write_text("".join(json.dumps({"id": i, "dialogue": d}) + "\n" for i, d in enumerate(docs * 3)))
    out = _cli(runs["summarization"], "--file", src, "--out", tmp_path / "summaries.jsonl", "--batch-size", 4)
    assert out.returncode == 0, out.stderr
    got = [json.loads(l) for l in (tmp_path / "summaries.jsonl").read_text().splitlines()]
    assert [(r["id"], r["dialogue"]) for r in got] == list(enumerate(docs * 3))
    assert all(isinstance(r["summary"], str) for r in got)
    assert "summarization:" in out.stderr  # the progress bar (3 batches)


def test_ner_csv_and_text_files(ner, tmp_path):
    from pipeline.commands.predict import read_inputs, write_outputs

    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n\n")
    rows = read_inputs(str(tmp_path / "in.txt"), ner.task, None)
    preds = ner.predict([r.pop("_input") for r in rows])
    write_outputs([{**r, "entities": p} for r, p in zip(rows, preds)], str(tmp_path / "out.csv"))
    with open(tmp_path / "out.csv", newline="") as f:
        back = list(csv.DictReader(f))
    assert [r["text"] for r in back] == SENTENCES
    _assert_spans(SENTENCES, [json.loads(r["entities"]) for r in back], labels(ner))


def test_adapter_run_predicts(tmp_path):
    """A PEFT run (model/ holds adapter_config.json): loaded through its base, same span contract."""
    from pipeline.commands.predict import Predictor

    train(["recipe=bert-ner", "debug=smoke", "method=lora", "trainer.num_train_epochs=1"], tmp_path)
    assert (tmp_path / "model" / "adapter_config.json").is_file()
    p = Predictor(tmp_path)
    _assert_spans(SENTENCES, p.predict(SENTENCES), labels(p))


def test_bad_run_dir_is_one_line_exit_2(tmp_path):
    out = _cli(tmp_path / "nope", "--text", "hello")
    assert out.returncode == 2 and out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("task: {name: ner}\n")
    (tmp_path / "run" / "status.json").write_text('{"status": "failed"}')
    out = _cli(tmp_path / "run", "--text", "hello")
    assert out.returncode == 2 and "no saved model/ (status: failed)" in out.stderr


def test_model_folder_without_its_weights_is_one_line_and_no_traceback(runs, tmp_path, capsys):
    import shutil

    from pipeline.commands.predict import main

    run = tmp_path / "copied"
    shutil.copytree(runs["ner"] / ".hydra", run / ".hydra")
    shutil.copytree(runs["ner"] / "model", run / "model")
    (run / "model" / "model.safetensors").unlink()  # the folder copied without its weights
    with pytest.raises(SystemExit) as e:
        main([str(run), "--text", "Angela Merkel visited Paris ."])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "no weights in it (model.safetensors" in err[0], err
    (run / "model" / "model.safetensors").write_bytes(b"not a safetensors file")  # damaged weights
    with pytest.raises(SystemExit) as e:
        main([str(run), "--text", "Angela Merkel visited Paris .", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith("error: ") and "cannot load the run's model" in err[-1], err


def test_bad_input_file_fails_before_loading_the_model(runs, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"dialogue": "unterminated\n')
    (tmp_path / "cols.csv").write_text("id,body\n1,hello\n")
    for path, why in ((tmp_path / "bad.jsonl", "not JSON lines"), (tmp_path / "cols.csv", "no column document"),
                      (tmp_path / "missing.jsonl", "file not found")):
        out = _cli(runs["summarization"], "--file", path)
        assert out.returncode == 2 and out.stderr.startswith("error: ") and why in out.stderr, out.stderr


def test_help_does_not_import_torch():
    code = "import sys; from pipeline.commands.predict import build_parser; build_parser().format_help(); " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_classification_predicts_labels_like_the_evaluate_stage(runs):
    """Predictions of the saved model equal samples.jsonl (the in-memory model at the end of the run), and the
    learned polarity carries to new sentences."""
    from pipeline.commands.predict import Predictor

    p = Predictor(runs["classification"])
    rows = [json.loads(l) for l in (runs["classification"] / "samples.jsonl").read_text().splitlines()]
    preds = p.predict([r["text"] for r in rows])
    assert [x["label"] for x in preds] == [r["predicted"] for r in rows]
    assert [x["score"] for x in preds] == pytest.approx([r["score"] for r in rows], abs=1e-3)
    new = p.predict(["the ending was wonderful and moving .", "the plot was dull and tedious ."])
    assert [x["label"] for x in new] == ["positive", "negative"] and all(0.5 < x["score"] <= 1 for x in new)


def test_text_pairs_from_the_command_line_and_a_file(runs, tmp_path):
    from pipeline.commands.predict import Predictor, read_inputs

    labels = {"entailment", "neutral", "contradiction"}
    out = _cli(runs["pairs"], "--text", "the old fox finds the stone .", "--text-pair", "the fox finds the stone .",
               "--text", "the lazy owl greets the tree .", "--text-pair", "the owl never greet the tree .")
    assert out.returncode == 0, out.stderr
    got = [json.loads(l) for l in out.stdout.splitlines()]
    assert [r["text_pair"] for r in got] == ["the fox finds the stone .", "the owl never greet the tree ."]
    assert all(r["prediction"]["label"] in labels and 0 < r["prediction"]["score"] <= 1 for r in got)
    src = tmp_path / "pairs.csv"
    src.write_text("sentence1,sentence2\nthe old fox finds the stone .,the fox finds the stone .\n")
    p = Predictor(runs["pairs"])
    rows = read_inputs(str(src), p.task, None)  # GLUE-style column names are accepted
    assert rows[0]["_input"] == {"text": "the old fox finds the stone .", "text_pair": "the fox finds the stone ."}
    assert p.predict([r["_input"] for r in rows])[0] == got[0]["prediction"]


def test_a_single_text_model_needs_no_text_pair(runs):
    from pipeline.commands.predict import Predictor, _text_rows, build_parser, run_task

    task = run_task(runs["classification"])
    rows = _text_rows(build_parser(task).parse_args([str(runs["classification"]), "--text", "a superb cast ."]), task)
    assert rows[0]["_input"] == {"text": "a superb cast ."}
    assert Predictor(runs["classification"]).predict([rows[0]["_input"]])[0]["label"] in ("positive", "negative")


def test_translation_matches_the_evaluate_stage_samples(runs, tmp_path):
    from pipeline.commands.predict import Predictor, read_inputs

    rows = [json.loads(l) for l in (runs["translation"] / "samples.jsonl").read_text().splitlines()]
    p = Predictor(runs["translation"])
    preds = p.predict([r["en"] for r in rows])
    assert preds == [r["generated"] for r in rows] and all(isinstance(x, str) for x in preds)
    src = tmp_path / "sentences.jsonl"
    src.write_text("".join(json.dumps({"text": r["en"]}) + "\n" for r in rows))  # "text": an alias of "en"
    assert p.predict([r["_input"] for r in read_inputs(str(src), p.task, None)]) == preds


def test_the_documented_output_keys_are_each_tasks_own():
    """docs/commands.md's table of what finetune-predict writes: every task, its input keys and prediction key."""
    import re

    from conftest import compose
    from pipeline.tasks import get_task, task_classes

    rows = re.findall(r"^  \| `([\w-]+)` \| (.*?) \| `(\w+)`: ", (ROOT / "docs" / "commands.md").read_text(), re.M)
    documented = {name: (inputs, key) for name, inputs, key in rows}
    assert set(documented) == set(task_classes())
    for name, (inputs, key) in documented.items():
        task = get_task(compose([f"task={name}"]))
        assert key == task.output_field, name
        if name != "translation":  # its input key is the source language code
            assert re.findall(r"`(\w+)`", inputs) == list(task.input_fields), name
