"""The bad-input catalogue: every case gives one line saying what is wrong, where, and how to fix it.

Most rows run in-process (compose + run until the error: seconds); a representative few go through the CLI in a
subprocess to check the exit code, the single stderr line, status.json, and the traceback switch.
``python tests/test_errors.py`` prints the table of messages (README "Reliability" section).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import compose, run_cli  # noqa: E402

SMOKE = ["debug=smoke", "data.source=auto"]  # tiny scratch model; data files given per case
NER_ROW = {"tokens": ["EU", "rejects", "German", "call"], "tags": ["B-ORG", "O", "B-MISC", "O"]}
NER_ROWS = "\n".join(json.dumps(NER_ROW) for _ in range(8)) + "\n"


def jsonl(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# (id, overrides, files {name: text or bytes}, env, expected part of the message). {tmp}: the case's folder.
CASES = [
    ("unknown recipe", ["recipe=nope"], {}, {}, "Could not find 'recipe/nope'"),
    ("unknown group option", ["model=nope"], {}, {}, "Could not find 'model/nope'"),
    ("unknown key", ["trainer.not_a_field=1"], {}, {}, "Could not override 'trainer.not_a_field'"),
    ("unknown method", ["method=nope"], {}, {}, "Could not find 'method/nope'"),
    ("model path does not exist", ["model.name_or_path=/nonexistent/model"], {}, {}, "no such directory"),
    ("hub id while offline", ["model=bert-base-cased"], {}, {"HF_HUB_OFFLINE": "1"},
     "is a hub id but HF_HUB_OFFLINE=1 and it is not cached"),
    ("task the model cannot do", ["model=gpt2", "task=ner"], {}, {}, "cannot do task=ner"),
    ("pickle-only model folder", ["model.name_or_path={tmp}/bin_model"],
     {"bin_model/config.json": '{"model_type": "bert"}', "bin_model/pytorch_model.bin": b"\x80\x02"}, {},
     "only pickle weights (pytorch_model.bin)"),
    ("hub dataset while offline", ["debug=smoke", "data.source=hub", "data.path=someone/ner-data"], {},
     {"HF_HUB_OFFLINE": "1"}, "data.path=someone/ner-data: cannot load the hub dataset (offline mode is on"),
    ("data file missing", SMOKE + ["data.train_file={tmp}/missing.jsonl"], {}, {}, "file not found"),
    ("data file unreadable (bad JSON)", SMOKE + ["data.train_file={tmp}/train.jsonl"],
     {"train.jsonl": '{"tokens": ["a"], "tags": \n'}, {},
     "{tmp}/train.jsonl: ArrowInvalid: JSON parse error"),
    ("data file not UTF-8", SMOKE + ["data.train_file={tmp}/train.conll"], {"train.conll": b"Caf\xe9 B-LOC\n"}, {},
     "not UTF-8 text"),
    ("data file empty", SMOKE + ["data.train_file={tmp}/train.jsonl"], {"train.jsonl": ""}, {}, "the file is empty"),
    ("missing text/label columns", SMOKE + ["data.train_file={tmp}/train.jsonl"],
     {"train.jsonl": jsonl(*[{"words": ["a"], "labels": ["O"]}] * 8)}, {}, "has no column 'tokens'"),
    ("CoNLL line with wrong column count", SMOKE + ["data.train_file={tmp}/train.conll"],
     {"train.conll": "EU B-ORG\nrejects O extra\n"}, {}, "train.conll:2: expected 2 columns"),
    ("tokens and tags of different lengths", SMOKE + ["data.train_file={tmp}/train.jsonl"],
     {"train.jsonl": jsonl(*[{"tokens": ["a", "b"], "tags": ["O"]}] * 8)}, {}, "2 tokens but 1 tags"),
    ("tokens that are not strings", SMOKE + ["data.train_file={tmp}/train.jsonl"],
     {"train.jsonl": jsonl(*[{"tokens": [1, 2], "tags": ["O", "O"]}] * 8)}, {},
     "split 'train' column 'tokens' must hold lists of strings"),
    ("label not in the label set at eval", SMOKE + ["data.train_file={tmp}/train.jsonl",
                                                   "data.validation_file={tmp}/dev.jsonl"],
     {"train.jsonl": NER_ROWS, "dev.jsonl": jsonl({"tokens": ["Bob"], "tags": ["B-PER"]})}, {},
     "split 'validation' has tags not seen in train: ['B-PER']"),
    ("empty split after filtering", SMOKE + ["data.train_file={tmp}/train.jsonl"],
     {"train.jsonl": jsonl(*[{"tokens": [], "tags": []}] * 8)}, {}, "is empty after loading/filtering"),
    ("sequence length above the model's maximum", ["debug=smoke", "task.max_length=4096"], {}, {},
     "task.max_length=4096 is above the model's maximum of 512 positions"),
    ("batch size out of range", ["debug=smoke", "trainer.per_device_train_batch_size=0"], {}, {},
     "trainer.per_device_train_batch_size=0 is out of range: it must be >= 1"),
    ("learning rate out of range", ["debug=smoke", "trainer.learning_rate=5"], {}, {},
     "trainer.learning_rate=5 is out of range: it must be < 1.0, e.g. trainer.learning_rate=5e-5"),
    ("learning rate not a number", ["debug=smoke", "trainer.learning_rate=3e-4x"], {}, {},
     "trainer.learning_rate='3e-4x' is not a number; give trainer.learning_rate=<number>"),
    ("trainer settings that conflict", ["debug=smoke", "trainer.save_strategy=steps"], {}, {},
     "--load_best_model_at_end requires the save and eval strategy to match, except when --save_strategy=\"best\", "
     "but found - Evaluation strategy: IntervalStrategy.EPOCH - Save strategy: SaveStrategy.STEPS"),
    ("accelerate and trainer disagree", ["debug=smoke"], {}, {"ACCELERATE_MIXED_PRECISION": "fp16"},
     "mixed precision: the accelerate config says fp16"),
    ("hub token in the config", ["debug=smoke", "+trainer.hub_token=secret-xyz"], {}, {},
     "trainer.hub_token is set in the config"),
    ("resume=auto with nothing to resume", ["debug=smoke", "resume=auto"], {}, {}, "resume=auto: nothing to resume"),
    ("resume from a partial checkpoint", ["debug=smoke", "resume={tmp}/checkpoint-7"],
     {"checkpoint-7/trainer_state.json": "{}"}, {},
     "not a complete checkpoint (no COMPLETE marker: the save did not finish)"),
]


def prepare(case_dir: Path, overrides, files) -> list[str]:
    for name, content in files.items():
        p = case_dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    return [o.format(tmp=case_dir) for o in overrides]


def message_of(overrides, case_dir: Path) -> str:
    """Compose and run in this process until the error; the message the CLI would print after 'error: '."""
    from hydra.errors import HydraException

    from pipeline.errors import PipelineError
    from pipeline.run import run

    try:
        cfg = compose(overrides)
        run(cfg, case_dir / "run")
    except HydraException as e:
        return str(e).strip()
    except PipelineError as e:
        return str(e)
    raise AssertionError(f"no error for {overrides}")


@pytest.mark.parametrize("name,overrides,files,env,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(name, overrides, files, env, expected, tmp_path, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    msg = message_of(prepare(tmp_path, overrides, files), tmp_path)
    assert expected.format(tmp=tmp_path) in msg, msg
    if "Could not" not in expected:  # ours (Hydra lists the options on more lines)
        assert "\n" not in msg and len(msg) < 400, msg


def test_preference_rows_without_chosen_rejected(tmp_path):
    from pipeline.data.preference import load_preferences
    from pipeline.errors import DataError

    (tmp_path / "pref.jsonl").write_text(jsonl(*[{"prompt": "Hi", "answer": "there"}] * 8))
    cfg = compose(["rlhf=dpo", f"rlhf.data.train_file={tmp_path}/pref.jsonl"])
    with pytest.raises(DataError, match="has no column 'chosen'"):
        load_preferences(cfg.rlhf.data, 0)


# -- through the CLI: exit code, one line on stderr, status.json, traceback switch --------------------------------
def test_cli_unknown_recipe_is_hydras_short_message(tmp_path):
    r = run_cli(["recipe=nope", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert r.returncode == 1 and "Could not find 'recipe/nope'" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_missing_data_file_one_line_exit_2_and_failed_status(tmp_path):
    run_dir = tmp_path / "run"
    r = run_cli(SMOKE + [f"data.train_file={tmp_path}/missing.jsonl", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "missing.jsonl: file not found" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "file not found" in status["error"]
    assert not (run_dir / "model").exists() and not (run_dir / "metrics.json").exists()


def test_cli_debug_errors_shows_the_traceback(tmp_path):
    r = run_cli(SMOKE + [f"data.train_file={tmp_path}/missing.jsonl", f"hydra.run.dir={tmp_path}/run",
                         "debug_errors=true"], cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr and "DataError" in r.stderr


def test_cli_output_directory_not_writable(tmp_path):
    (tmp_path / "a_file").write_text("x")
    r = run_cli(["debug=smoke", f"hydra.run.dir={tmp_path}/a_file/run"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: hydra.run.dir={tmp_path}/a_file/run: cannot create the run directory ({tmp_path}/a_file is a "
        f"file, not a folder); give a writable folder with hydra.run.dir=... (or output_root=...)"]


def more_rows() -> list[tuple[str, str]]:
    """The rows checked through the CLI or other entry points above, produced in-process for the table."""
    import contextlib
    import io
    import tempfile

    from pipeline.data.preference import load_preferences
    from pipeline.errors import PipelineError
    from pipeline.lock import RunDirCheck, RunLock

    rows = []
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "a_file").write_text("x")
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
            RunDirCheck()._check("hydra.run.dir", f"{d}/a_file/run")
        rows.append(("output directory not writable", err.getvalue().strip().removeprefix("error: ")))
        with RunLock(d):
            try:
                RunLock(d).__enter__()
            except PipelineError as e:
                rows.append(("run directory in use", str(e)))
        (Path(d) / "pref.jsonl").write_text(jsonl(*[{"prompt": "Hi", "answer": "there"}] * 8))
        try:
            load_preferences(compose(["rlhf=dpo", f"rlhf.data.train_file={d}/pref.jsonl"]).rlhf.data, 0)
        except PipelineError as e:
            rows.append(("preference rows without chosen/rejected", str(e)))
        return [(name, msg.replace(d, "<tmp>")) for name, msg in rows]


if __name__ == "__main__":  # the table for the README: python tests/test_errors.py
    import tempfile

    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", OMP_NUM_THREADS="1",
                      TRANSFORMERS_VERBOSITY="error", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    import logging

    logging.disable(logging.WARNING)
    print("| bad input | message (`error: ...`, exit 2; Hydra's own: exit 1) |\n|---|---|")
    for name, overrides, files, env, _ in CASES:
        with tempfile.TemporaryDirectory() as d:
            old = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            msg = message_of(prepare(Path(d), overrides, files), Path(d)).replace(d, "<tmp>")
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        print(f"| {name} | `{msg.splitlines()[0]}` |")
    for name, msg in more_rows():
        print(f"| {name} | `{msg}` |")
