"""``hydra/sweeper=optuna`` (hydra_plugins/finetune_pipeline/optuna_sweeper.py): search spaces parsed from Hydra's
sweep syntax; a smoke study whose objective is each trial's validation metric (never the test metric), stored in
SQLite in the sweep directory so that a second invocation continues it (its trial run as a submitit job, with new
parameters); trials interrupted by a killed search are closed as failed; the direction follows the task."""

from __future__ import annotations

import json
import math

import pytest

from conftest import compose, run_cli

N_TRIALS = 1


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("optuna") / "sweep"
    args = ["search=quickstart", "debug=smoke", "trainer.max_steps=6", "num_samples=0", "quiet=true",
            f"hydra.sweep.dir={out}"]
    first = run_cli(args + [f"hydra.sweeper.n_trials={N_TRIALS}"])
    assert first.returncode == 0, first.stderr[-3000:]
    after_first = json.loads((out / "optuna.json").read_text())
    # the same study, one trial more, as a cluster job (submitit's local executor)
    second = run_cli(args + [f"hydra.sweeper.n_trials={N_TRIALS + 1}", "hydra/launcher=submitit_local"])
    assert second.returncode == 0, second.stderr[-3000:]
    return {"out": out, "first": after_first, "final": json.loads((out / "optuna.json").read_text()),
            "log": first.stdout + first.stderr + second.stdout + second.stderr}


@pytest.mark.slow
def test_objective_is_each_trials_validation_metric(study):
    res = study["final"]
    assert res["objective"] == "eval_f1" and res["direction"] == "maximize"
    for t in res["trials"]:
        m = json.loads((study["out"] / str(t["number"]) / "metrics.json").read_text())
        assert t["state"] == "complete" and t["run_dir"].endswith(f"/{t['number']}")
        assert t["value"] == m["eval_f1"] and "test_f1" in m  # validation, not test
        cfg = (study["out"] / str(t["number"]) / ".hydra" / "config.yaml").read_text()
        assert f"learning_rate: {t['params']['trainer.learning_rate']}" in cfg
    best = res["trials"][res["best"]["number"]]
    assert res["best"]["value"] == best["value"] == max(t["value"] for t in res["trials"])
    assert res["best"]["run_dir"] == best["run_dir"] and res["best"]["params"] == best["params"]
    saved = (study["out"] / "optimization_results.yaml").read_text()
    assert "best_params" in saved and "trainer.learning_rate" in saved


@pytest.mark.slow
def test_second_invocation_continues_the_stored_study(study):
    assert [t["number"] for t in study["first"]["trials"]] == list(range(N_TRIALS))
    assert [t["number"] for t in study["final"]["trials"]] == list(range(N_TRIALS + 1))
    assert study["final"]["trials"][:N_TRIALS] == study["first"]["trials"]  # earlier trials kept, not rerun
    new = study["final"]["trials"][N_TRIALS]["params"]
    assert all(new != t["params"] for t in study["first"]["trials"])  # not the first invocation's draws again
    trial_dirs = sorted(p.name for p in study["out"].iterdir() if p.name.isdigit())
    assert trial_dirs == [str(n) for n in range(N_TRIALS + 1)]
    assert f"{N_TRIALS} of {N_TRIALS + 1} trials done" in study["log"]
    html = (study["out"] / "comparison.html").read_text()
    assert "Optuna study" in html and "optimization history" in html


def test_search_space_from_hydra_sweep_syntax():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.finetune_pipeline.optuna_sweeper import search_space

    space, fixed = search_space(["trainer.learning_rate=tag(log, interval(1e-5, 1e-3))",
                                 "trainer.warmup_steps=interval(0.0, 0.2)", "trainer.num_train_epochs=range(1, 4)",
                                 "method.r=choice(4, 8, 16)", "seed=3"])
    assert space["trainer.learning_rate"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert space["trainer.warmup_steps"] == FloatDistribution(0.0, 0.2)
    assert space["trainer.num_train_epochs"] == IntDistribution(1, 3)  # range's stop is excluded, as in Python
    assert space["method.r"] == CategoricalDistribution([4, 8, 16])
    assert fixed == {"seed": "3"}


def _sweeper(overrides: list[str], direction: str = "auto"):
    from hydra_plugins.finetune_pipeline.optuna_sweeper import OptunaSweeper

    s = OptunaSweeper(sampler=None, direction=direction, storage=None, study_name="x", n_trials=1)
    s.config = compose(overrides)
    return s


def test_direction_follows_the_task():
    assert _sweeper(["recipe=bert-ner"])._direction() == "maximize"
    assert _sweeper(["recipe=gpt2-generation"])._direction() == "minimize"  # eval_loss
    assert _sweeper(["recipe=gpt2-generation"], "minimize")._direction() == "minimize"
    with pytest.raises(ValueError, match="use direction=auto"):
        _sweeper(["recipe=gpt2-generation"], "maximize")._direction()


def test_trials_left_running_by_an_interrupted_search_are_closed(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from hydra_plugins.finetune_pipeline.optuna_sweeper import OptunaSweeper

    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    done = study.ask()
    done.set_user_attr("outcome", "completed")
    study.tell(done, 0.5)
    study.ask()  # the search was killed while this trial ran
    OptunaSweeper._close_interrupted(optuna.load_study(study_name="s", storage=storage))
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]
    assert not math.isnan(study.best_value)
