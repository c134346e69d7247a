"""Start-up stays light: `finetune --help` and `finetune recipe=... --cfg job` import no torch / transformers /
datasets / evaluate (each a second or more), and the fast --help says what Hydra's own app help says.

Times are measured by the benchmark harness (benchmarks/run.py), not asserted here; what is asserted is the cause
of slowness that regresses silently: a heavy import at module level somewhere on the CLI path.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

HEAVY = ("torch", "transformers", "datasets", "evaluate", "peft", "trl", "accelerate", "tokenizers")

RUN_CLI = """
import contextlib, io, json, runpy, sys
sys.argv = ["finetune", *sys.argv[1:]]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        runpy.run_module("pipeline", run_name="__main__")
    except SystemExit as e:
        code = e.code
    else:
        code = 0
print(json.dumps({"code": code, "stdout": out.getvalue(), "heavy": sorted(m for m in HEAVY if m in sys.modules)}))
"""

HYDRA_HELP = """
import sys
sys.argv = ["finetune", "--help", *sys.argv[1:]]
from pipeline.commands.finetune import _app
_app()  # Hydra's own app help (the fast path in cli.main is skipped)
"""


def _python(code: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


def _cli(args: list[str]) -> dict:
    out = _python(f"HEAVY = {HEAVY!r}\n" + RUN_CLI, args)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["-h", "recipe=t5-summarization"],
                                  ["recipe=bert-ner", "--cfg", "job"], ["recipe=gpt2-generation", "--cfg", "job"]])
def test_cli_start_up_imports_nothing_heavy(args):
    result = _cli(args)
    assert not result["code"], result
    assert result["heavy"] == [], f"finetune {' '.join(args)} imported {result['heavy']}"
    assert "model:" in result["stdout"] and "trainer:" in result["stdout"]


def _section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"== {title} ==") + 2
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("== "))
    return [line for line in lines[start:end] if line.strip()]


@pytest.mark.parametrize("overrides", [[], ["recipe=t5-summarization", "trainer.learning_rate=1e-3"]])
def test_fast_help_matches_hydra_help(overrides):
    fast = _cli(["--help", *overrides])["stdout"]
    hydra = _python(HYDRA_HELP, overrides)
    assert hydra.returncode == 0, hydra.stderr[-2000:]
    groups = _section(fast, "Configuration groups")
    assert any(g.startswith("recipe: ") and "bert-ner" in g for g in groups), groups
    assert groups == _section(hydra.stdout, "Configuration groups")
    fast_cfg, hydra_cfg = fast.split("== Config ==")[1], hydra.stdout.split("== Config ==")[1]
    assert fast_cfg.split("Powered by Hydra")[0].strip() == hydra_cfg.split("Powered by Hydra")[0].strip()


def test_help_with_a_bad_override_gets_hydras_error():
    out = subprocess.run([sys.executable, "-m", "pipeline", "--help", "recipe=no-such-recipe"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "no-such-recipe" in out.stderr
