"""Every recipe and group option composes; Hydra refuses unknown recipes and keys with its own message."""

from pathlib import Path

import pytest

from conftest import ROOT, compose, run_cli

RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml") if p.stem != "base")


def test_recipes_exist():
    assert {"bert-ner", "gpt2-generation", "t5-summarization"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes(recipe):
    from pipeline.tasks import task_classes

    cfg = compose([f"recipe={recipe}"])
    assert cfg.name and cfg.task.name in task_classes()
    smoke = compose([f"recipe={recipe}", "debug=smoke"])
    assert smoke.model.init == "scratch" and smoke.data.source == "synthetic"


@pytest.mark.parametrize("model", MODELS)
def test_model_files_name_a_known_family(model):
    from pipeline.families import FAMILIES

    cfg = compose([f"model={model}"])
    assert cfg.model.family in FAMILIES and cfg.model.trust_remote_code is False


def test_recipe_overrides_reach_the_config():
    cfg = compose(["recipe=t5-summarization", "model=t5-base", "trainer.learning_rate=1e-3"])
    assert cfg.model.name_or_path == "google-t5/t5-base" and cfg.trainer.learning_rate == 1e-3
    assert cfg.task.name == "summarization"


def test_cfg_job_prints_config_without_training(tmp_path):
    r = run_cli(["recipe=bert-ner", "--cfg", "job"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "name: bert-ner" in r.stdout and not (tmp_path / "outputs").exists()


def test_unknown_recipe_is_refused_by_hydra():
    r = run_cli(["recipe=nope", "--cfg", "job"])
    assert r.returncode != 0 and "Could not find 'recipe/nope'" in r.stderr


def test_unknown_key_is_refused_by_hydra():
    r = run_cli(["trainer.not_a_field=1", "--cfg", "job"])
    assert r.returncode != 0 and "not_a_field" in r.stderr
