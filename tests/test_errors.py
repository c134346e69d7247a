"""The bad-input catalogue: every case gives one line saying what is wrong, where, and how to fix it.

Most rows run in-process (compose + run until the error: seconds); a representative few go through the CLI in a
subprocess to check the exit code, the single stderr line, status.json, and the traceback switch.
``python tests/test_errors.py`` prints the table of messages (README "Reliability" section).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, compose, run_cli  # noqa: E402

SMOKE = ["debug=smoke", "data.source=auto"]  # tiny scratch model; data files given per case
NER_ROW = {"tokens": ["EU", "rejects", "German", "call"], "tags": ["B-ORG", "O", "B-MISC", "O"]}
NER_ROWS = "\n".join(json.dumps(NER_ROW) for _ in range(8)) + "\n"


def jsonl(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# (id, overrides, files {name: text or bytes}, env, expected part of the message). {tmp}: the case's folder.
CASES = [
    ("unknown recipe", ["recipe=nope"], {}, {}, "recipe=nope: no such recipe in conf/recipe/; options: "),
    ("unknown group option", ["model=nope"], {}, {}, "model=nope: no such model in conf/model/; options: "),
    ("mistyped key", ["trainer.learning_rat=1"], {}, {},
     "trainer.learning_rat: no such key in the config; did you mean trainer.learning_rate?"),
    ("mistyped method", ["method=lorra"], {}, {}, "method=lorra: no such method in conf/method/; did you mean "
                                                  "method=lora?"),
    ("several values without --multirun", ["trainer.learning_rate=1e-3,2e-3"], {}, {},
     "To sweep over it, add --multirun"),
    ("unreadable override", ["trainer.learning_rate=[1"], {}, {}, "cannot read the override 'trainer.learning_rate=[1'"),
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
    ("word-tagging rows in a CSV", SMOKE + ["data.train_file={tmp}/train.csv"],
     {"train.csv": "tokens,tags\n" + "\"['EU', 'rejects']\",\"['B-ORG', 'O']\"\n" * 8}, {},
     "column 'tokens' holds text, not a list of words (a CSV cell cannot hold a list)"),
    ("tokens that are not strings", SMOKE + ["data.train_file={tmp}/train.jsonl"],
     {"train.jsonl": jsonl(*[{"tokens": [1, 2], "tags": ["O", "O"]}] * 8)}, {},
     "split 'train' column 'tokens' must hold lists of strings"),
    ("label not in the label set at eval", SMOKE + ["data.train_file={tmp}/train.jsonl",
                                                   "data.validation_file={tmp}/dev.jsonl"],
     {"train.jsonl": NER_ROWS, "dev.jsonl": jsonl({"tokens": ["Bob"], "tags": ["B-PER"]})}, {},
     "split 'validation' has tags not seen in train: ['B-PER']"),
    ("empty split after filtering", SMOKE + ["data.train_file={tmp}/train.jsonl"],
     {"train.jsonl": jsonl(*[{"tokens": [], "tags": []}] * 8)}, {}, "is empty after dropping the rows above"),
    ("sequence length above the model's maximum", ["debug=smoke", "task.max_length=4096"], {}, {},
     "task.max_length=4096 is above the model's maximum of 512 positions"),
    ("batch size out of range", ["debug=smoke", "trainer.per_device_train_batch_size=0"], {}, {},
     "trainer.per_device_train_batch_size=0 is out of range: it must be >= 1"),
    ("learning rate out of range", ["debug=smoke", "trainer.learning_rate=5"], {}, {},
     "trainer.learning_rate=5 is out of range: it must be < 1.0, e.g. trainer.learning_rate=5e-5"),
    ("learning rate not a number", ["debug=smoke", "trainer.learning_rate=3e-4x"], {}, {},
     "trainer.learning_rate='3e-4x' is not a number; give trainer.learning_rate=<number>"),
    ("negative max_steps", ["debug=smoke", "trainer.max_steps=-5"], {}, {},
     "trainer.max_steps=-5 is out of range: it must be >= -1"),
    ("trainer settings that conflict", ["debug=smoke", "trainer.save_strategy=steps"], {}, {},
     "trainer.load_best_model_at_end=true needs trainer.save_strategy to equal trainer.eval_strategy (now steps and "
     "epoch): set both"),
    ("accelerate and trainer disagree", ["debug=smoke"], {}, {"ACCELERATE_MIXED_PRECISION": "fp16"},
     "mixed precision: the accelerate config says fp16"),
    ("hub token in the config", ["debug=smoke", "+trainer.hub_token=secret-xyz"], {}, {},
     "trainer.hub_token is set in the config"),
    ("resume=auto with nothing to resume", ["debug=smoke", "resume=auto"], {}, {}, "resume=auto: nothing to resume"),
    ("resume from a partial checkpoint", ["debug=smoke", "resume={tmp}/checkpoint-7"],
     {"checkpoint-7/trainer_state.json": "{}"}, {},
     "not a complete checkpoint (no COMPLETE marker: the save did not finish)"),
    ("fresh run in a directory holding checkpoints", ["debug=smoke"],
     {"run/checkpoints/checkpoint-16/trainer_state.json": "{}"}, {},
     "<tmp>/run/checkpoints holds checkpoints of an earlier run (checkpoint-16); continue that run with resume=auto"),
    ("task size not a number", ["debug=smoke", "task.max_length=long"], {}, {},
     "task.max_length='long' is not an integer; give task.max_length=<integer>"),
    ("task size out of range", ["recipe=gpt2-generation", "debug=smoke", "task.block_size=0"], {}, {},
     "task.block_size=0 is out of range: it must be >= 1"),
    ("data setting of the wrong type", ["debug=smoke", "data.conll.tag_column=last"], {}, {},
     "data.conll.tag_column='last' is not an integer"),
    ("unknown data source", ["debug=smoke", "data.source=parquet"], {}, {},
     "data.source='parquet': use one of auto, hub, conll, json, csv, text, synthetic"),
    ("PEFT setting of the wrong type", ["debug=smoke", "method=lora", "method.r=eight"], {}, {},
     "method.r='eight' is not an integer; give method.r=<integer>"),
    ("PEFT setting out of range", ["debug=smoke", "method=lora", "method.lora_dropout=1.5"], {}, {},
     "method.lora_dropout=1.5 is out of range: it must be < 1.0"),
    ("generation setting out of range", ["recipe=gpt2-generation", "debug=smoke", "task.generation.top_p=2"], {}, {},
     "task.generation.top_p=2 is out of range: it must be <= 1.0"),
    ("RLHF size out of range", ["recipe=gpt2-rlhf", "debug=smoke", "rlhf.eval.num_prompts=0"], {}, {},
     "rlhf.eval.num_prompts=0 is out of range: it must be >= 1"),
    ("RLHF trainer setting of the wrong type", ["recipe=gpt2-rlhf", "debug=smoke", "rlhf.trainer.learning_rate=fast"],
     {}, {}, "rlhf.trainer.learning_rate='fast' is not a number"),
    ("tiny model that cannot be built", ["debug=smoke", "model.scratch.hidden_size=33"], {}, {},
     "model.scratch.hidden_size=33 is not a multiple of model.scratch.num_heads=2"),
    ("data path is a folder", SMOKE + ["data.train_file={tmp}"], {}, {}, "is a folder; give a file"),
    ("unknown attention implementation", ["debug=smoke", "model.attn_implementation=fast"], {}, {},
     "model.attn_implementation='fast': use one of sdpa, eager"),
    ("task metric the evaluation does not compute", ["debug=smoke", "task.metric=f2", "trainer.max_steps=2",
                                                      "data.synthetic.num_train=32"], {}, {},
     "task.metric=f2: the evaluation has no eval_f2; use one of LOC_f1, MISC_f1, ORG_f1, PER_f1, accuracy, f1, loss"),
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

    from pipeline.commands.app import hydra_error_line
    from pipeline.errors import PipelineError
    from pipeline.stages.run import run

    from pipeline.training.guards import user_error

    cfg = None
    try:
        cfg = compose(overrides)
        run(cfg, case_dir / "run")
    except HydraException as e:
        return hydra_error_line(e)
    except PipelineError as e:
        return str(e)
    except Exception as e:  # as the CLI does: errors from inside the libraries that are the user's to fix
        err = user_error(e, cfg, case_dir / "run")
        if err is None:
            raise
        return str(err)
    raise AssertionError(f"no error for {overrides}")


@pytest.mark.parametrize("name,overrides,files,env,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(name, overrides, files, env, expected, tmp_path, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    msg = message_of(prepare(tmp_path, overrides, files), tmp_path)
    assert expected.replace("<tmp>", str(tmp_path)).format(tmp=tmp_path) in msg, msg
    assert "\n" not in msg and len(msg) < 400, msg


def test_preference_rows_without_chosen_rejected(tmp_path):
    from pipeline.rlhf.preference import load_preferences
    from pipeline.errors import DataError

    (tmp_path / "pref.jsonl").write_text(jsonl(*[{"prompt": "Hi", "answer": "there"}] * 8))
    cfg = compose(["rlhf=dpo", f"rlhf.data.train_file={tmp_path}/pref.jsonl"])
    with pytest.raises(DataError, match="has no column 'chosen'"):
        load_preferences(cfg.rlhf.data, 0)


def test_reliability_page_lists_these_cases_in_order():
    """docs/reliability.md's table comes from this file (python tests/test_errors.py): these cases first, in order
    (the rows after them come from the CLI and command cases of its __main__)."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    table = text[text.index("| bad input | message"):].split("\n\n")[0].splitlines()[2:]
    assert [row.split(" | ")[0].removeprefix("| ") for row in table][:len(CASES)] == [c[0] for c in CASES]


# -- through the CLI: exit code, one line on stderr, status.json, traceback switch --------------------------------
def test_cli_mistyped_recipe_is_one_line_naming_the_closest_exit_2_and_nothing_written(tmp_path):
    r = run_cli(["recipe=bert-nre", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: recipe=bert-nre: no such recipe in conf/recipe/; did you mean recipe=bert-ner? options: "
        + ", ".join(sorted(p.stem for p in (ROOT / "conf" / "recipe").glob("*.yaml")))]
    assert not (tmp_path / "run").exists()


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


# -- the other commands' arguments and files: one line, exit 2, before any model is loaded -------------------------
def finished_run(d: Path, overrides=("recipe=bert-ner", "debug=smoke")) -> Path:
    """A run directory as far as the commands read it before loading a model: .hydra/config.yaml + model/."""
    from omegaconf import OmegaConf

    (d / ".hydra").mkdir(parents=True, exist_ok=True)
    (d / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose(list(overrides))))
    (d / "model").mkdir(exist_ok=True)
    (d / "model" / "config.json").write_text('{"model_type": "bert"}')
    return d


COMMAND_CASES = [  # (id, command, args; {run}: a finished run, {tmp}: the case's folder, files, expected)
    ("predict: batch size 0", "predict", ["{run}", "--text", "hi", "--batch-size", "0"], {}, "--batch-size=0 must be >= 1"),
    ("predict: negative max new tokens", "predict", ["{run}", "--text", "hi", "--max-new-tokens", "-1"], {},
     "--max-new-tokens=-1 is out of range: it must be >= 1"),
    ("predict: top-p above 1", "predict", ["{run}", "--text", "hi", "--top-p", "2"], {}, "--top-p=2.0 is out of range"),
    ("predict: zero beams", "predict", ["{run}", "--text", "hi", "--num-beams", "0"], {}, "--num-beams=0 is out of range"),
    ("predict: negative seed", "predict", ["{run}", "--text", "hi", "--seed", "-1"], {}, "--seed=-1 must be in [0, 2**32)"),
    ("predict: not a device", "predict", ["{run}", "--text", "hi", "--device", "gpu0"], {},
     "--device=gpu0: not a device; use cpu, cuda or cuda:<index>"),
    ("predict: output path is a folder", "predict", ["{run}", "--text", "hi", "--out", "{tmp}"], {},
     "cannot write there (it is a folder)"),
    ("predict: input file row without the column", "predict", ["{run}", "--file", "{tmp}/in.jsonl"],
     {"in.jsonl": '{"text": "fine"}\n{"other": "no text"}\n'}, "input 2 has no column 'text'"),
    ("predict: input file value not text", "predict", ["{run}", "--file", "{tmp}/in.jsonl"],
     {"in.jsonl": '{"text": "fine"}\n{"text": null}\n'}, "input 2 has null in column 'text'"),
    ("predict: neither --text nor --file", "predict", ["{run}"], {}, "give --text/--prompt (repeatable) or --file"),
    ("compare: report folder not writable", "compare", ["{run}", "--out", "{tmp}/a_file/report"], {"a_file": "x"},
     "cannot write the report there"),
    ("export: output is a file", "export", ["{run}", "--merge", "--out", "{tmp}/a_file"], {"a_file": "x"},
     "cannot write the merged model there (it is a file)"),
    ("export: not a run", "export", ["{tmp}/nothing", "--merge"], {}, "no model/ with adapter_config.json"),
]


def command_message(command: str, args: list[str], case_dir: Path, files: dict) -> tuple[int, str]:
    """Run finetune-<command> in this process: (exit code, stderr)."""
    import contextlib
    import io

    from pipeline.commands import compare, export, predict

    run = finished_run(case_dir / "run")
    for name, content in files.items():
        (case_dir / name).write_text(content)
    argv = [a.format(run=run, tmp=case_dir) for a in args]
    main = {"predict": predict.main, "compare": compare.main, "export": export.main}[command]
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code
    return code, err.getvalue().strip()


@pytest.mark.parametrize("name,command,args,files,expected", COMMAND_CASES, ids=[c[0] for c in COMMAND_CASES])
def test_command_arguments_give_one_line(name, command, args, files, expected, tmp_path):
    code, err = command_message(command, args, tmp_path, files)  # the model/ here is not loadable: none is loaded
    assert code == 2 and err.startswith("error: ") and "\n" not in err and expected in err, err


def test_finetune_rlhf_bad_values_are_one_line(tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.commands.rlhf import rlhf as run_alone

    for overrides, expected in (([], "finetune-rlhf needs rlhf="),
                                (["rlhf=dpo"], "needs rlhf.policy_path=<an earlier run>/model"),
                                (["rlhf=dpo", f"rlhf.policy_path={tmp_path}/none"], "no config.json there"),
                                (["rlhf=reward", "rlhf.reward.init=scratch", "rlhf.beta=-1"],
                                 "rlhf.beta=-1.0 is out of range")):
        with pytest.raises(PipelineError) as e:
            run_alone(compose(["debug=smoke", *overrides]), tmp_path / "run")
        assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)


def more_rows() -> list[tuple[str, str]]:
    """The rows checked through the CLI or other entry points above, produced in-process for the table."""
    import contextlib
    import io
    import tempfile

    from pipeline.rlhf.preference import load_preferences
    from pipeline.errors import PipelineError
    from pipeline.infra.rundir import RunDirCheck, RunLock

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
        for name, command, args, files, _ in COMMAND_CASES:
            case = Path(tempfile.mkdtemp(dir=d))
            _, err = command_message(command, args, case, files)
            rows.append((f"finetune-{name}", err.removeprefix("error: ").replace(str(case), "<tmp>")))
        return [(name, msg.replace(d, "<tmp>")) for name, msg in rows]


if __name__ == "__main__":  # the table for the README: python tests/test_errors.py
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pipeline, not an installed one
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", OMP_NUM_THREADS="1",
                      TRANSFORMERS_VERBOSITY="error", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    import logging

    logging.disable(logging.WARNING)
    print("| bad input | message (`error: ...`, exit 2) |\n|---|---|")
    for name, overrides, files, env, _ in CASES:
        with tempfile.TemporaryDirectory() as d:
            old = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            msg = message_of(prepare(Path(d), overrides, files), Path(d)).replace(d, "<tmp>").replace(os.getcwd(), "<cwd>")
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        print(f"| {name} | `{msg.splitlines()[0]}` |")
    for name, msg in more_rows():
        print(f"| {name} | `{msg}` |")


def test_every_key_a_message_tells_you_to_set_exists():
    """Each ``<group>.<key>=`` a message or hint in pipeline/ names is a key you can set: in the composed config of
    some task / RLHF option, or a field of the library class the group feeds (TrainingArguments, a PEFT config);
    a hint written ``+trainer.key=`` names a key the config does not hold yet (``+`` on a present key fails)."""
    import ast
    import dataclasses
    import re

    from omegaconf import OmegaConf
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING
    from transformers import Seq2SeqTrainingArguments

    from conftest import ROOT
    from pipeline.tasks import task_classes

    hints = {}
    for f in sorted((ROOT / "pipeline").rglob("*.py")):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                for m in re.finditer(r"(?<![\w.{])(\+?)((?:model|task|data|trainer|method|logger|rlhf|hub)"
                                     r"(?:\.[a-z_0-9]+)+)(?==)", n.value):
                    hints.setdefault((m.group(1), m.group(2)), f"{f.relative_to(ROOT)}:{n.lineno}")
    configs = [compose([f"task={t}"]) for t in task_classes()] + [compose(["method=lora"])] + \
              [compose(["recipe=gpt2-generation", f"rlhf={r}"]) for r in ("grpo", "dpo", "reward")]
    library = {"trainer": {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments)},
               "method": {f.name for c in PEFT_TYPE_TO_CONFIG_MAPPING.values() for f in dataclasses.fields(c)}}
    wrong = []
    for (plus, key), where in sorted(hints.items()):
        group, _, rest = key.partition(".")
        present = any(OmegaConf.select(c, key, default="<absent>") != "<absent>" for c in configs)
        settable = present or (rest.split(".")[0] in library.get(group, ()) and "." not in rest) or \
            key.startswith(("data.columns.", "rlhf.data.columns."))  # a column mapping: any canonical column
        if not settable or (plus and present):
            wrong.append(f"{where}: {plus}{key}=")
    assert not wrong, "hints naming keys that cannot be set that way:\n" + "\n".join(wrong)


def test_optional_libraries_import_chatter_is_dropped_and_their_errors_kept():
    """torchao / torch's pytree / DeepSpeed warn at import where installed (pipeline/util/noise.py); a command's
    console keeps only their errors. The loggers are driven here as those libraries drive them (DeepSpeed sets
    its own level and a stdout handler after we filter it), and then the real imports run."""
    code = (
        "import logging, sys\n"
        "import pipeline.commands\n"
        "ds = logging.getLogger('DeepSpeed'); ds.setLevel(logging.INFO); ds.propagate = False\n"
        "ds.addHandler(logging.StreamHandler(sys.stdout))\n"
        "ds.warning('Setting accelerator to CPU'); ds.error('deepspeed error kept')\n"
        "logging.getLogger('torchao.kernel.intmm').warning('Detected no triton')\n"
        "logging.getLogger('torch.utils._pytree').warning('is an Enum subclass')\n"
        "import peft, accelerate.utils  # the real imports: torchao / deepspeed load here where installed\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "FINETUNE_LIBRARY_WARNINGS": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["deepspeed error kept"]
    assert r.stderr == ""
