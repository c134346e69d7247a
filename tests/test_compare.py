"""finetune-compare: the compare-all sweep (3 families, tiny models) ends with one report whose values are each
run's metrics.json; failed runs appear with their error; Pareto fronts and loss-history fallbacks."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import compose, run_cli


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """``finetune recipe=compare-all debug=smoke`` with a 2-method set: 6 jobs, bert x prefix refused."""
    out = tmp_path_factory.mktemp("sweep")
    r = run_cli(["recipe=compare-all", "debug=smoke", 'hydra.sweeper.params.method="lora,prefix"',
                 "trainer.max_steps=3", "trainer.logging_steps=1", "num_samples=0", f"hydra.sweep.dir={out}"])
    # the refused job fails, the other five run and the report is written; the command then exits 1, naming it
    assert r.returncode == 1, r.stderr[-2000:]
    assert "error: 1 sweep job(s) failed:" in r.stderr and "status.json" in r.stderr.splitlines()[-1]
    return out


def test_sweep_ends_with_one_report_per_family(sweep):
    for name in ("comparison.md", "comparison.csv", "comparison.json", "comparison.png", "comparison.html"):
        assert (sweep / name).stat().st_size > 0, name
    report = json.loads((sweep / "comparison.json").read_text())
    assert [(s["family"], s["task"]) for s in report["sections"]] == [
        ("bert", "ner"), ("gpt2", "generation"), ("t5", "summarization")]
    md = (sweep / "comparison.md").read_text()
    assert "## bert · ner · test_f1" in md and "## t5 · summarization · test_rougeL" in md
    with open(sweep / "comparison.csv") as f:
        assert len(list(csv.DictReader(f))) == 6


def test_report_values_are_the_runs_metrics(sweep):
    runs = [r for s in json.loads((sweep / "comparison.json").read_text())["sections"] for r in s["runs"]]
    completed = [r for r in runs if r["status"] == "completed"]
    assert len(completed) == 5
    for row in completed:
        m = json.loads((sweep / row["run"] / "metrics.json").read_text())
        assert row["value"] == m[row["metric"]] and row["method"] == m["method"] and row["family"] == m["family"]
        assert row["trainable_params"] == m["trainable_params"] and row["total_params"] == m["total_params"]
        assert row["trainable_pct"] == pytest.approx(100 * m["trainable_ratio"])
        assert row["train_seconds"] == m["train_runtime"] and row["peak_mem_mb"] == m["peak_rss_mb"]
        assert row["samples_per_second"] == m["train_samples_per_second"]
        assert row["tokens_per_second"] == m["train_tokens_per_second"]
        assert row["model_mb"] == pytest.approx(m["model_bytes"] / 2 ** 20) and row["eval_loss"] == m["eval_loss"]
    md = (sweep / "comparison.md").read_text()
    assert all(f"{r['value']:.4f}" in md for r in completed if r["metric"] != "test_perplexity")


def test_failed_run_appears_with_its_error(sweep):
    runs = [r for s in json.loads((sweep / "comparison.json").read_text())["sections"] for r in s["runs"]]
    failed = [r for r in runs if r["status"] == "failed"]
    assert [(r["family"], r["method"]) for r in failed] == [("bert", "prefix")]
    assert "prefix tuning" in failed[0]["error"] and "prefix tuning" in (sweep / "comparison.md").read_text()
    bert = json.loads((sweep / "comparison.json").read_text())["sections"][0]["runs"]
    assert bert[-1]["status"] == "failed"  # sorted by the metric, failures last


def test_cli_on_chosen_runs_writes_elsewhere(sweep, tmp_path, capsys):
    from pipeline.commands.compare import main

    runs = sorted(p for p in sweep.iterdir() if p.name.startswith(("2-", "3-")))  # the two GPT-2 runs
    main([str(p) for p in runs] + ["--out", str(tmp_path)])
    assert "2 runs (0 failed)" in capsys.readouterr().out
    rows = json.loads((tmp_path / "comparison.json").read_text())["sections"][0]["runs"]
    assert [r["value"] for r in rows] == sorted(r["value"] for r in rows)  # perplexity: lower first


def test_a_folder_holding_no_run_is_one_line_and_writes_nothing(tmp_path, capsys):
    from pipeline.commands.compare import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "empty")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "no run directory in it" in err[0]
    assert list((tmp_path / "empty").iterdir()) == []


def test_pareto_front():
    from pipeline.reports.plots import pareto

    pts = [(1, 0.5), (10, 0.9), (5, 0.4), (100, 0.9)]
    assert pareto(pts, larger_better=True) == [0, 1]
    assert pareto(pts, larger_better=False) == [0, 2]


def test_loss_history_from_checkpoints(tmp_path):
    from pipeline.reports.runs import loss_history

    for step in (2, 10):
        d = tmp_path / "checkpoints" / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": step, "loss": 1.0}]}))
    assert loss_history(tmp_path) == [{"step": 10, "loss": 1.0}]


@pytest.mark.parametrize("recipe, headline", [("bert-ner", ("test_f1", True)),
                                              ("gpt2-generation", ("test_perplexity", False)),
                                              ("t5-summarization", ("test_rougeL", True))])
def test_headline_metric_and_direction_come_from_the_runs_config(recipe, headline):
    """test_<task.report_metric or task.metric>, larger better per task.greater_is_better: generation selects
    checkpoints by loss and reports perplexity (task.report_metric), the same direction."""
    from omegaconf import OmegaConf

    from pipeline.reports.runs import headline as of_config

    assert of_config(OmegaConf.to_container(compose([f"recipe={recipe}"]))) == headline
