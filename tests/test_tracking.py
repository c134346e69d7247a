"""Tracking through the Trainer's integrations (logger=), the Hub-format model card, hub.push refusals, quiet mode."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, compose, run_cli, run_pipeline

import mlflow  # noqa: F401  (in the test extra: a missing install must fail, not skip)
import wandb  # noqa: F401  (likewise)


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory):
    """One NER smoke run tracked by MLflow in a store inside its run directory."""
    run_dir = tmp_path_factory.mktemp("mlflow_run")
    metrics = run_pipeline(["recipe=bert-ner", "debug=smoke", "logger=mlflow", "trainer.num_train_epochs=2"], run_dir)
    return run_dir, metrics


def test_logger_group_sets_report_to():
    assert list(compose([]).trainer.report_to) == ["tensorboard"]
    assert list(compose(["logger=mlflow"]).trainer.report_to) == ["mlflow"]
    assert compose(["debug=smoke"]).trainer.report_to == "none"  # smoke selects logger=none ...
    assert list(compose(["debug=smoke", "logger=mlflow"]).trainer.report_to) == ["mlflow"]  # ... the CLI wins


def test_mlflow_run_has_config_params_curves_metrics_and_artifacts(mlflow_run):
    from mlflow import MlflowClient

    run_dir, metrics = mlflow_run
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    params = run.data.params
    cfg = compose(["recipe=bert-ner", "debug=smoke", "logger=mlflow"])
    assert params["cfg.task.name"] == "ner" and params["cfg.model.family"] == "bert"
    assert float(params["cfg.trainer.learning_rate"]) == float(cfg.trainer.learning_rate)
    assert params["cfg.trainer.num_train_epochs"] == "2"
    assert "learning_rate" in params  # the Trainer's MLflowCallback logged TrainingArguments into the same run
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["final/test_f1"] == pytest.approx(saved["test_f1"]) == pytest.approx(metrics["test_f1"])
    assert run.data.metrics["final/eval_f1"] == pytest.approx(saved["eval_f1"])
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 2  # training curve, one point per log step
    assert len(client.get_metric_history(run.info.run_id, "eval_f1")) >= 2  # per epoch + final evaluation
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.yaml", "README.md"} <= artifacts
    assert str(run_dir) in run.info.artifact_uri


def test_model_card_has_hub_metadata_and_the_metrics(mlflow_run):
    run_dir, _ = mlflow_run
    card = (run_dir / "model" / "README.md").read_text()
    front, body = card.split("---\n", 2)[1:]
    meta = yaml.safe_load(front)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "token-classification"
    assert {"ner", "full", "bert"} <= set(meta["tags"])
    [result] = meta["model-index"][0]["results"]
    assert result["metrics"][0]["value"] == round(saved["test_f1"], 4)
    for key in ("test_f1", "eval_f1", "test_precision", "eval_loss"):
        assert f"| {key} | {saved[key]:.4f} |" in body
    assert "learning_rate=0.003" in body and "- **Method:** full" in body and "## Reproduce" in body


def test_model_card_of_an_adapter_run_names_peft():
    from pipeline.report import model_card

    cfg = compose(["recipe=t5-summarization", "method=lora", "data=dialogsum"])
    card = model_card(cfg, {"test_rougeL": 0.25, "eval_rougeL": 0.3}, "finetune recipe=t5-summarization method=lora")
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert meta["library_name"] == "peft" and meta["base_model"] == str(cfg.model.name_or_path)
    assert meta["datasets"] == ["knkarthick/dialogsum"]
    assert meta["model-index"][0]["results"][0]["metrics"][0] == {"type": "rouge", "value": 0.25,
                                                                    "name": "test rougeL"}
    assert "PEFT adapter" in card and "finetune recipe=t5-summarization method=lora" in card


def test_tensorboard_events_and_hparams_in_the_run_dir(tmp_path):
    run_pipeline(["recipe=gpt2-generation", "debug=smoke", "logger=tensorboard", "trainer.num_train_epochs=1"],
                 tmp_path)
    events = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(events) >= 2 and any(e.parent.name == "hparams" for e in events)  # curves + the config/metrics


def test_hub_push_offline_fails_before_training(tmp_path):
    out = run_cli(["recipe=bert-ner", "debug=smoke", "hub.push=true", "hub.repo_id=me/ner",
                   f"hydra.run.dir={tmp_path}"],
                  env={"HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_not_a_real_token"}, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "HF_HUB_OFFLINE=1" in out.stderr
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "model").exists()
    written = "".join(p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())
    assert "hf_not_a_real_token" not in written


def test_hub_push_needs_repo_id_and_token(monkeypatch):
    from pipeline import hub
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="hub.repo_id"):
        hub.check(compose(["hub.push=true"]))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        hub.check(compose(["hub.push=true", "hub.repo_id=me/x"]))
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: unreachable
    with pytest.raises(ConfigError, match="unreachable"):
        hub.check(compose(["hub.push=true", "hub.repo_id=me/x"]))


def test_quiet_run_prints_one_line(tmp_path):
    out = run_cli(["recipe=bert-ner", "debug=smoke", "trainer.num_train_epochs=1", f"hydra.run.dir={tmp_path}"],
                  env={"FINETUNE_QUIET": "1"}, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == [out.stdout.strip()] and out.stdout.startswith("done: test_f1=")
    assert "it/s" not in out.stderr  # no progress bars


def test_summary_table_lists_metrics_and_outputs(mlflow_run):
    from rich.console import Console

    from pipeline.console import summary_table

    run_dir, metrics = mlflow_run
    console = Console(record=True, width=200)
    console.print(summary_table(compose(["recipe=bert-ner", "debug=smoke"]), metrics, run_dir))
    text = console.export_text()
    assert f"{metrics['test_f1']:.4f}" in text and str(run_dir / "model") in text and "mlflow.db" in text


def test_wandb_offline_run_in_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_pipeline(["recipe=bert-ner", "debug=smoke", "logger=wandb", "trainer.num_train_epochs=1"], tmp_path)
    records = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))  # offline: nothing was sent
    assert len(records) == 1, sorted(str(p) for p in (tmp_path / "wandb").rglob("*"))
    data = records[0].read_bytes()
    found = {k: k.encode() in data for k in ("trainer.learning_rate", "final/test_f1")}  # config, final metrics
    assert all(found.values()), (found, len(data))  # one failure seen in ~20 runs: these say which part was missing
