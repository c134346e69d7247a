"""trainer.early_stopping_patience: a smoke run whose validation F1 plateaus (it reaches its ceiling, then stops
improving) stops after ``patience`` evaluations without improvement; metrics.json says so and where; the model kept
is the best checkpoint, not the last; settings under which it cannot work are refused in one line."""

from __future__ import annotations

import json

import pytest

from conftest import compose, run_pipeline

PATIENCE, EVERY = 3, 8
RUN = ["debug=smoke", "trainer.num_train_epochs=10", "trainer.eval_strategy=steps", "trainer.save_strategy=steps",
       f"+trainer.eval_steps={EVERY}", f"+trainer.save_steps={EVERY}", "num_samples=0",
       f"trainer.early_stopping_patience={PATIENCE}"]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("early")
    metrics = run_pipeline(RUN, run_dir)
    return run_dir, metrics


@pytest.mark.slow
def test_plateau_stops_training_after_patience_evaluations(stopped):
    run_dir, m = stopped
    evals = [(h["step"], h["eval_f1"]) for h in json.loads((run_dir / "log_history.json").read_text())
             if "eval_f1" in h]
    assert m["early_stopped"] is True and m["planned_steps"] == 160
    stop = m["early_stopped_at_step"]
    assert stop < m["planned_steps"] and evals[-1][0] == stop
    best_step, best = max(evals, key=lambda e: (e[1], -e[0]))  # the first evaluation reaching the best F1
    assert m["best_step"] == best_step and stop - best_step == PATIENCE * EVERY
    assert all(f1 <= best for step, f1 in evals if step > best_step)  # no improvement after it: the plateau
    assert m["eval_f1"] == best  # the final validation score is the best checkpoint's


@pytest.mark.slow
def test_model_kept_is_the_best_checkpoint_not_the_last(stopped):
    from safetensors.torch import load_file

    run_dir, m = stopped
    final = load_file(str(run_dir / "model" / "model.safetensors"))
    best = load_file(str(run_dir / "checkpoints" / f"checkpoint-{m['best_step']}" / "model.safetensors"))
    last = load_file(str(run_dir / "checkpoints" / f"checkpoint-{m['early_stopped_at_step']}" / "model.safetensors"))
    assert all((final[k] == best[k]).all() for k in final)
    assert any((final[k] != last[k]).any() for k in final)


@pytest.mark.parametrize("overrides, message", [
    (["do_eval=false"], "needs evaluations on the validation split"),
    (["trainer.load_best_model_at_end=false"], "needs trainer.load_best_model_at_end=true"),
    (["trainer.early_stopping_patience=0"], "give a whole number of evaluations >= 1"),
])
def test_settings_that_cannot_stop_early_are_refused(overrides, message, tmp_path):
    from pipeline.errors import ConfigError
    from pipeline.tasks import get_task
    from pipeline.training.trainer import training_args

    cfg = compose(["debug=smoke", "trainer.early_stopping_patience=2", *overrides])
    with pytest.raises(ConfigError, match=message):
        training_args(cfg, get_task(cfg), tmp_path)


def test_keys_are_popped_before_training_arguments(tmp_path):
    from pipeline.tasks import get_task
    from pipeline.training.trainer import training_args

    cfg = compose(["debug=smoke", "trainer.early_stopping_patience=2", "trainer.early_stopping_threshold=0.01"])
    args = training_args(cfg, get_task(cfg), tmp_path)
    assert args.restore_callback_states_from_checkpoint is True  # a resumed run keeps its patience count
    assert not hasattr(args, "early_stopping_patience") and not hasattr(args, "early_stopping_threshold")
