"""The documentation is executable: every ``finetune…`` command in README.md, recipes/README.md and docs/*.md runs
here, offline, or (when it needs the Hub, a GPU, several processes or a sweep) is composed and must resolve.

Commands are found generically: every line starting with a command (``finetune``, ``finetune-predict``,
``-compare``, ``-export``, ``-rlhf``, or ``accelerate launch ... -m pipeline``) inside fenced code blocks (``\\``
continuations joined, a leading ``$ `` dropped), and inline code spans that are whole commands (no placeholders).
Each command is
1. composed as written and resolved (pipeline/stages/resolve.py: types, ranges, derived values, library configs), for every
   job of a sweep;
   (a sweep: jobs covering every value of every axis);
2. run, unless it is a sweep, an ``accelerate launch``, a ``--cfg`` print, or still needs the Hub with
   ``debug=smoke``: with ``debug=smoke`` (tiny model; the data files it names are written here in the format its
   config says, or generated data) and a few steps (``BUDGET``). Commands that compose to the same code path (task,
   family, method, RLHF step, data source and files, model, run directory, resume) run once.
``finetune-predict`` / ``-compare`` / ``-export`` / ``-rlhf`` run against the runs this test made.

Placeholders: ``outputs/<recipe>/<time>`` (any ``<...>`` part) is a run of that recipe made here (one with an adapter
for ``finetune-export --merge``); ``outputs/multirun/...`` (and any folder ``finetune-compare`` is given that no command made here, e.g. a search's
sweep folder) the folder of all runs made here; ``<sft run>`` a run of a
causal-LM task; ``<run>/reward/model`` a run with a reward model; ``key=...`` a data file written here. A command
with another placeholder fails the test: give it a rule here.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import time
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "recipes" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("finetune", "finetune-predict", "finetune-compare", "finetune-export", "finetune-rlhf", "finetune-inspect")
BUDGET = ["debug=smoke", "quiet=true", "trainer.max_steps=3", "num_samples=2", "data.max_train_samples=64",
          "data.max_eval_samples=8", "data.max_test_samples=8"]
RLHF_BUDGET = ["rlhf.trainer.max_steps=2", "rlhf.reward.trainer.max_steps=2", "rlhf.eval.num_prompts=4",
               "rlhf.data.synthetic.num_train=16", "rlhf.data.synthetic.num_test=8", "rlhf.data.max_eval_samples=8"]
FILE_KEYS = ("data.train_file", "data.validation_file", "data.test_file", "rlhf.data.train_file",
             "rlhf.data.test_file")
SECONDS_BUDGET = 600  # a hang guard (measured 90-130 s on the 2-core box; per-command times in the report)


# -- finding the commands ------------------------------------------------------------------------------------------
def _is_command(line: str) -> bool:
    first = line.split(maxsplit=1)[0] if line.strip() else ""
    return first in PROGRAMS or (line.startswith("accelerate launch") and re.search(r"-m pipeline\b", line) is not None)


def _is_inline_command(span: str) -> bool:
    words = span.split()
    if not words or words[0] not in PROGRAMS or re.search(r"<|\.\.\.|…|\[|\bRUN_DIR\b|\bDIR\b|--help", span):
        return False
    return len(words) == 1 and words[0] == "finetune" or all("=" in w or w.startswith("-") or w == "job"
                                                             for w in words[1:]) and len(words) > 1


def doc_commands() -> list[tuple[str, str]]:
    """(where, command) for every documented command, in reading order."""
    found = []
    for path in DOCS:
        block, pending = False, ""
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                block, pending = not block, ""
                continue
            if block:
                text = line.strip().removeprefix("$ ")
                text = f"{pending} {text}".strip() if pending else text
                if text.endswith("\\"):
                    pending = text[:-1].strip()
                    continue
                pending = ""
                if _is_command(text):
                    found.append((f"{path.relative_to(ROOT)}:{lineno}", text))
            else:
                found += [(f"{path.relative_to(ROOT)}:{lineno}", span) for span in re.findall(r"`([^`]+)`", line)
                          if _is_inline_command(span)]
    return found


def split_command(command: str) -> tuple[str, list[str], list[str]]:
    """(program, flags, overrides): ``accelerate launch ... -m pipeline[.rlhf] ARGS`` -> finetune[-rlhf] ARGS."""
    words = shlex.split(re.sub(r"<[^<>]*>", lambda m: m.group(0).replace(" ", "_"), command), comments=True)
    if words[0] == "accelerate":
        at = words.index("-m")
        words = ["accelerate:" + ("finetune-rlhf" if words[at + 1] == "pipeline.commands.rlhf" else "finetune")] + words[at + 2:]
    program, flags, rest, i = words[0], [], [], 1
    while i < len(words):
        w = words[i]
        if w in ("--multirun", "-m"):
            flags.append("--multirun")
        elif w in ("--cfg", "-c"):
            flags.append(f"--cfg={words[i + 1]}")
            i += 1
        elif w.startswith("-") and program.split(":")[-1] in ("finetune", "finetune-rlhf"):
            flags.append(w)
        else:
            rest.append(w)
        i += 1
    return program, flags, rest


# -- sweeps --------------------------------------------------------------------------------------------------------
def jobs_of(overrides: list[str]) -> list[list[str]]:
    """Jobs of a command line that cover every value of every sweep axis at least once (Hydra's own parser expands
    a,b,c / range / choice; the k-th job takes the k-th value of each axis, so max(axis length) jobs, not their
    product). A sweep a group option brings (recipe=compare-all, search=<recipe>: hydra.sweeper.params) adds its axes.
    Continuous search spaces (interval) have no jobs to list: the rest of the line is resolved."""
    axes = _axes(overrides)
    first = [axis[0] for axis in axes]
    if recipe_sweeps(first):
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            hcfg = compose(config_name="config", overrides=first, return_hydra_config=True).hydra
        params = dict(hcfg.sweeper.get("params") or {})
        axes += _axes([f"{k}={v}" for k, v in params.items()])
    n = max((len(axis) for axis in axes), default=1)
    return [[axis[k % len(axis)] for axis in axes] for k in range(n)]


def _axes(overrides: list[str]) -> list[list[str]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    axes = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_sweep_override():
            axes.append([o.input_line])
        elif o.is_discrete_sweep():
            axes.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
    return axes


def recipe_sweeps(overrides: list[str]) -> bool:
    """A group option named is itself a sweep (hydra.mode: MULTIRUN: recipe=compare-all, search=<recipe>)."""
    for o in overrides:
        group, _, name = o.partition("=")
        if not name or "." in group or group.startswith(("+", "~")):
            continue
        for option in name.strip("[]").split(","):
            path = ROOT / "conf" / group / f"{option.strip()}.yaml"
            if path.is_file() and "MULTIRUN" in path.read_text():
                return True
    return False


# -- the runs this test makes --------------------------------------------------------------------------------------
class Workspace:
    """A folder that is the cwd of every command; runs made in it, found again for placeholders."""

    def __init__(self, root: Path):
        self.root, self.runs, self.keys, self.n, self.program = root, [], {}, 0, ""

    def new_run_dir(self, named: str | None) -> Path:
        self.n += 1
        return self.root / named if named else self.root / "outputs" / "runs" / f"{self.n:03d}"

    def find(self, want) -> Path | None:
        return next((r for r in reversed(self.runs) if want(r)), None)

    def recipe_run(self, recipe: str, adapter: bool = False) -> Path | None:
        return self.find(lambda r: _cfg(r).get("name") == recipe and (not adapter or
                                                                        (r / "model" / "adapter_config.json").is_file()))


def _cfg(run: Path) -> dict:
    from omegaconf import OmegaConf

    path = run / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {}


def substitute(word: str, ws: Workspace, words: list[str]) -> str:
    """A word with a placeholder -> what it stands for here (see the module docstring)."""
    key, eq, value = word.partition("=")
    text = value if eq else word
    if eq and text in ("...", "…"):
        if key in FILE_KEYS:
            return f"{key}={'prefs.jsonl' if key.startswith('rlhf.') else Path(key).name + '.jsonl'}"
        raise AssertionError(f"no rule for the placeholder in {word!r}")
    if "<" not in text:
        if _compare_dir(text, ws):  # finetune-compare of a folder a sweep (resolved, not run here) would have made
            return str(ws.root / "outputs")
        return word
    head = text.split("<", 1)[0]
    if text.startswith("<sft_run>"):
        run = ws.find(lambda r: (r / "model" / "config.json").is_file() and _cfg(r).get("task", {}).get("name")
                      in _causal_tasks())
        path = f"{run}{text.split('>', 1)[1]}" if run else None
    elif text.startswith("<run>/reward/"):
        run = ws.find(lambda r: (r / "reward" / "model" / "config.json").is_file())
        path = f"{run}{text.split('>', 1)[1]}" if run else None
    elif head.startswith("outputs/multirun"):
        path = str(ws.root / "outputs")
    elif re.match(r"outputs/[\w.-]+/<[^>]+>$", text):
        recipe = text.split("/")[1]
        run = ws.recipe_run(recipe, adapter="--merge" in words) or ws.recipe_run(recipe)
        path = str(run) if run else None
    else:
        raise AssertionError(f"no rule for the placeholder in {word!r}; add one in tests/test_docs.py")
    if path is None:
        raise AssertionError(f"{word!r}: no run made here stands for it (a command it refers to did not run first)")
    return f"{key}={path}" if eq else path


def _compare_dir(text: str, ws: Workspace) -> bool:
    return ws.program == "finetune-compare" and not text.startswith("-") and \
        not (ws.root / text).exists() and not Path(text).exists()


def _causal_tasks() -> list[str]:
    from pipeline.tasks import task_classes

    return [n for n, c in task_classes().items() if c.auto_class == "AutoModelForCausalLM"]


# -- files a command names -----------------------------------------------------------------------------------------
def write_named_files(cfg, where: Path) -> None:
    """Data files named by a resolved config and missing here: written in the format the config says."""
    from pipeline.data.synthetic import generate
    from pipeline.tasks import get_task

    task = get_task(cfg)
    rows = generate(task, {"num_train": 48, "num_validation": 12, "num_test": 12}, 0)
    for split, key in (("train", "train_file"), ("validation", "validation_file"), ("test", "test_file")):
        name = cfg.data.get(key)
        if name and not (where / name).exists() and not Path(name).is_absolute():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            _write_rows(where / name, [dict(r) for r in rows[split]], cfg.data)
    if cfg.data.get("mixture"):  # each source's files, in its own row format
        from pipeline.data import mixture

        for entry in mixture.entries(cfg.data):
            scfg = mixture.source_config(cfg.data, entry)
            srows = generate(mixture.source_task(task, scfg, entry), {"num_train": 48, "num_validation": 12,
                                                                       "num_test": 12}, 0)
            for split, key in (("train", "train_file"), ("validation", "validation_file"), ("test", "test_file")):
                name = entry.get(key)
                if name and not (where / name).exists() and not Path(name).is_absolute():
                    (where / name).parent.mkdir(parents=True, exist_ok=True)
                    _write_rows(where / name, [dict(r) for r in srows[split]], scfg)
    rl = cfg.get("rlhf")
    if rl:
        import random

        from pipeline.rlhf.preference import synthetic_pair

        rng = random.Random(0)
        for key in ("train_file", "test_file"):
            name = rl.data.get(key)
            if name and not (where / name).exists():
                (where / name).parent.mkdir(parents=True, exist_ok=True)
                (where / name).write_text("".join(json.dumps(synthetic_pair(rng)) + "\n" for _ in range(24)))


def _write_rows(path: Path, rows: list[dict], data) -> None:
    import csv

    mapping = dict(data.get("columns") or {})
    source = str(data.source)
    if source == "conll":
        sep = data.conll.separator or " "
        tok, tag = int(data.conll.token_column), int(data.conll.tag_column)
        width = max(tok if tok >= 0 else -tok, tag if tag >= 0 else -tag) + (1 if tok >= 0 and tag >= 0 else 1)
        width = max(width, 2)
        lines = []
        for r in rows:
            for t, g in zip(r["tokens"], r["tags"]):
                cols = ["-"] * width
                cols[tok], cols[tag] = t, g
                lines.append(sep.join(cols))
            lines.append("")
        path.write_text("\n".join(lines) + "\n")
    elif source == "text":
        joiner = "\n" if data.text.sample_by == "line" else "\n\n"
        path.write_text(joiner.join(r["text"] for r in rows) + "\n")
    elif source == "csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[mapping.get(k, k) for k in rows[0]])
            writer.writeheader()
            writer.writerows({mapping.get(k, k): v for k, v in r.items()} for r in rows)
    else:  # json / jsonl
        path.write_text("".join(json.dumps({mapping.get(k, k): v for k, v in r.items()}) + "\n" for r in rows))


# -- running -------------------------------------------------------------------------------------------------------
_COMPOSED: dict = {}


def compose(overrides: list[str]):
    """conftest.compose, cached (documented commands repeat; composing costs ~0.3 s)."""
    from conftest import compose as conftest_compose

    key = tuple(overrides)
    if key not in _COMPOSED:
        _COMPOSED[key] = conftest_compose(list(overrides))
    return _COMPOSED[key].copy()


def needs_hub(cfg, program: str) -> bool:
    from pipeline.rlhf.preference import preference_source as pref_source

    model = cfg.model
    local = str(model.get("name_or_path") or "").startswith(("/", ".", "~", "pkg://"))
    if model.init == "pretrained" and not local:
        return True
    if cfg.data.source == "hub" or (cfg.get("hub") or {}).get("push"):
        return True
    rl = cfg.get("rlhf")  # finetune-rlhf has no run data: a Hub path is read
    return bool(rl) and pref_source(rl.data, None if program == "finetune-rlhf" else str(cfg.data.source)) == "hub"


def needs_machine(program: str, flags: list[str], overrides: list[str]) -> str | None:
    if program.startswith("accelerate:"):
        return "accelerate launch (several processes, or GPUs)"
    if "--multirun" in flags or recipe_sweeps(overrides):
        return "a sweep"
    if any(f.startswith("--cfg") for f in flags):
        return "--cfg prints the config"
    if any(o.startswith("method=qlora") for o in overrides):
        return "QLoRA needs a CUDA GPU"
    return None


def run_key(cfg, run_dir_named, overrides) -> str:
    """Commands with the same key exercise the same code path: run once (per recipe name: ``outputs/<recipe>/<time>``
    placeholders find a run by it)."""
    rl = cfg.get("rlhf")
    parts = [cfg.get("name"), cfg.task.name, cfg.model.family, cfg.model.init, cfg.model.get("name_or_path"), cfg.method.name,
             rl and rl.algorithm, rl and rl.get("policy_path"), rl and rl.get("reward_path"),
             rl and rl.reward.init, cfg.data.source,
             [cfg.data.get(k) for k in ("train_file", "validation_file", "test_file")], dict(cfg.data.columns),
             cfg.get("resume"), run_dir_named]
    return json.dumps(parts, default=str)


def run_finetune(ws: Workspace, program: str, overrides: list[str], named_dir: str | None, rlhf: bool) -> Path:
    from omegaconf import OmegaConf

    from pipeline.stages.resolve import resolve

    cfg = compose(overrides + BUDGET + (RLHF_BUDGET if rlhf else []))
    resolved = resolve(cfg, stage="rlhf" if program == "finetune-rlhf" else "finetune")
    if needs_hub(resolved, program):
        return None
    key = run_key(resolved, named_dir, overrides)
    if key in ws.keys:
        return ws.keys[key]
    write_named_files(resolved, ws.root)
    run_dir = ws.new_run_dir(named_dir)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    if program == "finetune-rlhf":
        from pipeline.commands.rlhf import rlhf as run_alone

        run_alone(cfg, run_dir)
    else:
        from pipeline.stages.run import run

        run(cfg, run_dir)
    ws.keys[key] = run_dir
    ws.runs.append(run_dir)
    return run_dir


def run_reader(program: str, args: list[str]) -> str:
    """finetune-predict / -compare / -export in this process; their stdout (exit 0 required)."""
    from pipeline.commands import compare, export, predict

    main = {"finetune-predict": predict.main, "finetune-compare": compare.main, "finetune-export": export.main}[program]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as e:
            if e.code not in (0, None):
                raise AssertionError(f"exit {e.code}: {err.getvalue().strip()[-400:]}") from None
    return out.getvalue()


def write_inputs(args: list[str], where: Path) -> None:
    """``--file x.jsonl`` of finetune-predict that does not exist: a few inputs of the run's task."""
    if "--file" in args:
        name = args[args.index("--file") + 1]
        if not (where / name).exists():
            rows = [{"document": "#Person1#: Shall we meet at the cafe on Monday? #Person2#: Sure, at noon.",
                     "text": "Angela Merkel visited Paris .", "prompt": "The old fox"}] * 2
            (where / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_every_documented_command_runs_or_resolves(tmp_path, monkeypatch):
    import logging

    from pipeline.stages.resolve import resolve

    logging.disable(logging.WARNING)
    monkeypatch.chdir(tmp_path)
    ws = Workspace(tmp_path)
    t0, failures, report, seen, resolved = time.time(), [], [], {}, {}
    commands = doc_commands()
    for where, command in commands:
        t = time.time()
        try:
            program, flags, words = split_command(command)
            ws.program = program
            words = [substitute(w, ws, words) for w in words]
            same = seen.setdefault((program, tuple(flags), tuple(words)), where)
            if same != where and "<" not in command and "resume=" not in command:
                report.append(f"same as {same}: {where}")
                continue
            name = program.split(":")[-1]
            if name == "finetune-inspect":  # composed and resolved as finetune would, files written, then run
                from pipeline.commands import inspect

                job = [w for w in words if not w.startswith("-") and "=" in w]
                write_named_files(resolve(compose(job)), tmp_path)
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    inspect.main(words)
                assert "row 0" in out.getvalue() or '"rows"' in out.getvalue(), out.getvalue()[:300]
                report.append(f"ran: {where}")
            elif name in ("finetune", "finetune-rlhf"):
                jobs = jobs_of(words)
                for job in jobs:  # as written: composes, every value checked, derived values and library configs
                    key = (name, tuple(job))
                    if key not in resolved:
                        resolved[key] = resolve(compose(job), stage="rlhf" if name == "finetune-rlhf" else "finetune")
                    written = resolved[key]
                why = needs_machine(program, flags, words)
                if why:
                    report.append(f"resolved ({len(jobs)} job(s); {why}): {where}")
                    continue
                named = next((w.split("=", 1)[1] for w in words if w.startswith("hydra.run.dir=")), None)
                run = run_finetune(ws, name, [w for w in words if not w.startswith("hydra.")], named,
                                   bool(written.get("rlhf")))
                report.append(f"{'ran' if run else 'resolved (needs the Hub)'}: {where}")
            else:
                write_inputs(words, tmp_path)
                out = run_reader(program, words)
                if program == "finetune-predict":
                    if "--out" in words:
                        out = (tmp_path / words[words.index("--out") + 1]).read_text()
                    assert out.strip() and all(json.loads(line) for line in out.strip().splitlines()), out[:300]
                report.append(f"ran: {where}")
        except Exception as e:  # every broken command is listed, not only the first
            failures.append(f"{where}: {command}\n    {type(e).__name__}: {' '.join(str(e).split())[:500]}")
        if report:
            report[-1] += f" ({time.time() - t:.1f} s)"
    logging.disable(logging.NOTSET)
    seconds = time.time() - t0
    print(f"{len(commands)} documented commands in {seconds:.0f} s:\n" + "\n".join(report))
    assert not failures, "documented commands that fail:\n" + "\n".join(failures)
    assert sum(r.startswith("ran") for r in report) >= 10, report
    assert seconds < SECONDS_BUDGET, f"the docs test took {seconds:.0f} s; dedupe or trim runs (BUDGET)"


def test_the_own_data_command_is_found_and_runs_on_the_files_it_names():
    """docs/data.md's own-data example is one of the commands (and is not skipped as needing the Hub: with
    debug=smoke the files it names are what runs)."""
    cmds = [c for _, c in doc_commands()]
    own = next(c for c in cmds if "data.conll.separator" in c)
    program, flags, words = split_command(own)
    assert program == "finetune" and "data.train_file=train.conll" in words and "data.conll.separator=\\t" in words
    assert any(c.strip() == "finetune" for c in cmds)  # the quickstart
    assert any(c.startswith("finetune-predict") for c in cmds)
