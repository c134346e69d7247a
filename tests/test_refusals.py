"""A refused run changes nothing: every refusal aimed at the folder of a finished run leaves that folder exactly as it
was (every file's path and bytes hashed before and after), so finetune-predict, finetune-compare and resume=auto go
on reading the run that was there."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

RUN = ["recipe=bert-ner", "debug=smoke", "quiet=true", "trainer.max_steps=4", "data.max_train_samples=32",
       "data.max_eval_samples=8", "data.max_test_samples=8", "num_samples=2"]


def folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def finetune_in_process(args: list[str], capsys=None) -> tuple[int, str]:
    """``finetune ARGS`` through its real entry point (Hydra app, lock, checks) in this process: (exit code, last
    stderr line). A subprocess per refusal would cost ~10 s of imports each."""
    from pipeline.commands.finetune import main

    argv = sys.argv
    sys.argv = ["finetune", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    err = capsys.readouterr().err.strip().splitlines() if capsys else []
    return code, err[-1] if err else ""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("refusals") / "ner-run"
    assert finetune_in_process(RUN + [f"hydra.run.dir={run_dir}"]) == (0, "")
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    return run_dir


REFUSALS = [  # (id, overrides, expected part of the one error line)
    ("another task into it", ["recipe=minilm-sst2", "debug=smoke", "quiet=true"], "holds a finished run (task=ner"),
    ("the same run again, fresh", RUN, "holds a finished run (task=ner"),
    ("a bad value", RUN + ["trainer.learning_rate=abc"], "trainer.learning_rate='abc' is not a number"),
    ("resuming it as another task", ["recipe=minilm-sst2", "debug=smoke", "quiet=true", "resume=auto"],
     "holds a run of task=ner"),
    ("resuming it with another method", RUN + ["method=lora", "resume=auto"], "method of this one (method=lora)"),
]


@pytest.mark.parametrize("name,overrides,expected", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refused_run_leaves_the_finished_run_folder_unchanged(finished, name, overrides, expected, capsys):
    before = folder_hash(finished)
    code, line = finetune_in_process(overrides + [f"hydra.run.dir={finished}"], capsys)
    assert code == 2 and line.startswith("error: ") and expected in line, (code, line)
    assert folder_hash(finished) == before


def test_run_refused_while_another_holds_the_directory_changes_nothing(finished, capsys):
    """A live run holds the lock (a process sleeping inside RunLock): the second run is refused, the folder kept."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pipeline.infra.rundir import RunLock\n"
                               "with RunLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
                               str(finished)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = folder_hash(finished)
        code, line = finetune_in_process(RUN + ["resume=auto", f"hydra.run.dir={finished}"], capsys)
        assert code == 2 and "is in use by another finetune run" in line, line
        assert folder_hash(finished) == before
    finally:
        holder.kill()
        holder.wait()


def test_after_the_refusals_predict_and_compare_read_the_run_that_was_there(finished, capsys):
    from pipeline.commands.predict import main

    main([str(finished), "--text", "Angela Merkel visited Paris .", "--quiet"])
    out = capsys.readouterr().out.strip().splitlines()
    assert isinstance(json.loads(out[-1])["entities"], list)  # an NER model, not a classifier
    from pipeline.reports.runs import read_run

    row = read_run(finished, finished.parent)
    assert row["status"] == "completed" and row["task"] == "ner"


def test_refused_run_in_a_new_folder_records_its_failure(tmp_path, capsys):
    """Where no earlier run is, the refusal is recorded like any failure (a sweep's report lists it)."""
    run_dir = tmp_path / "new"
    code, _ = finetune_in_process(RUN + ["trainer.learning_rate=abc", f"hydra.run.dir={run_dir}"], capsys)
    assert code == 2
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "trainer.learning_rate" in status["error"]
    assert (run_dir / ".hydra" / "config.yaml").is_file() and time.time() - status["time"] < 600
