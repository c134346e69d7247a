"""Tracking through the Trainer's integrations (logger=), the Hub-format model card, hub.push refusals, quiet mode."""

import json
import re
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, compose, run_cli, run_pipeline

import mlflow  # noqa: F401  (in the test extra: a missing install must fail, not skip)
import wandb  # noqa: F401  (likewise)


API_KEY = "hunter2-not-a-real-key"


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory):
    """One NER smoke run tracked by MLflow in a store inside its run directory, on data files at absolute paths,
    with a secret-named key in the logger group."""
    from pipeline.data.synthetic import generate
    from pipeline.tasks import get_task

    run_dir, data = tmp_path_factory.mktemp("mlflow_run"), tmp_path_factory.mktemp("mlflow_data")
    rows = generate(get_task(compose(["task=ner"])), {"num_train": 200, "num_validation": 32, "num_test": 32}, 0)
    files = []
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[split]))
        files.append(f"data.{split}_file={data / f'{split}.jsonl'}")
    metrics = run_pipeline(["recipe=bert-ner", "debug=smoke", "logger=mlflow", "trainer.num_train_epochs=2",
                            f"+logger.api_key={API_KEY}", *files], run_dir)
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


def test_tracker_params_and_model_card_hold_no_local_paths_or_secrets(mlflow_run):
    """The tracker (often a shared server) and the card (published) get no absolute local path and no value of a key
    named like a token / password / secret: neither the pipeline's params nor the Trainer callback's own."""
    from mlflow import MlflowClient

    run_dir, _ = mlflow_run
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    values = {**run.data.params, **{k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}}
    leaks = {k: v for k, v in values.items() if re.search(r"(^|[\s=:'\"])/(tmp|root|home|work)\b", str(v))
             or API_KEY in str(v)}
    assert not leaks, leaks
    assert values["cfg.logger.api_key"] == "<redacted>"
    assert values["cfg.data.train_file"] == "<local>/train.jsonl"
    assert "output_dir" in values and values["output_dir"].startswith("<local>/")  # the Trainer's own params too
    card = (run_dir / "model" / "README.md").read_text()
    assert "/tmp/" not in card and API_KEY not in card and "<local>/train.jsonl" in card


def test_model_card_scrubs_the_command_line():
    from pipeline.reports.card import model_card

    cfg = compose(["recipe=bert-ner", "model.name_or_path=/home/me/models/bert", "data.train_file=/data/x.conll"])
    card = model_card(cfg, {"test_f1": 0.5}, "finetune recipe=bert-ner data.train_file=/data/x.conll "
                                             "+logger.password=s3cret model.name_or_path=/home/me/models/bert")
    assert "/home/me" not in card and "/data/x.conll" not in card and "s3cret" not in card
    assert "data.train_file=<local>/x.conll" in card and "+logger.password=<redacted>" in card


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
    from pipeline.reports.card import model_card

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
    from pipeline.integrations import hub
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

    from pipeline.reports.console import summary_table

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
    keys = ("trainer.learning_rate", "final/test_f1")  # the config, the final metrics
    deadline = time.time() + 30
    while True:  # wandb's service process writes the record file; it can still be flushing when finish() returns
        data = records[0].read_bytes()
        found = {k: k.encode() in data for k in keys}
        if all(found.values()) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert all(found.values()), (found, len(data))


# -- hub.push against a local stand-in for the Hub's HTTP API ------------------------------------------------------
@pytest.fixture
def fake_hub():
    """An HTTP server answering the Hub API calls a push makes: whoami (any token), repo info (``repos``: id ->
    private flag; others 404 RepoNotFound), create repo (``create_status``). Records the requests it got."""
    import http.server
    import threading

    state = {"repos": {}, "create_status": 403, "requests": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, body, headers=None):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            state["requests"].append(("GET", self.path, self.headers.get("authorization", "")))
            if self.path.startswith("/api/whoami-v2"):
                return self._send(200, {"type": "user", "name": "me", "auth": {"accessToken": {"role": "write"}}})
            if self.path.startswith("/api/models/"):
                repo = self.path.split("/api/models/", 1)[1].split("/revision")[0].split("?")[0]
                if repo in state["repos"]:
                    return self._send(200, {"id": repo, "private": state["repos"][repo], "sha": "0" * 40})
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            state["requests"].append(("POST", self.path, self.headers.get("authorization", "")))
            return self._send(state["create_status"], {"error": "You don't have the rights to create this model"})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["endpoint"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()


HUB_TOKEN = "hf_fake_token_never_written_0123456789"


def test_hub_private_push_to_an_existing_public_repo_is_refused_before_training(fake_hub, monkeypatch):
    from pipeline.integrations import hub
    from pipeline.errors import ConfigError

    import huggingface_hub.constants

    fake_hub["repos"]["me/public-model"] = False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read at import
    monkeypatch.setenv("HF_ENDPOINT", fake_hub["endpoint"])
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    with pytest.raises(ConfigError, match="hub.private=true but me/public-model exists and is public"):
        hub.check(compose(["hub.push=true", "hub.repo_id=me/public-model"]))
    hub.check(compose(["hub.push=true", "hub.repo_id=me/public-model", "hub.private=false"]))  # said so: allowed
    hub.check(compose(["hub.push=true", "hub.repo_id=me/new-model"]))  # not there yet: created private


def test_hub_push_failing_after_training_keeps_the_run_and_writes_no_token(fake_hub, tmp_path):
    """The push path up to the Hub's refusal: the run stays completed with model/ intact, one line says how to retry
    the upload, and the token (from the environment) is in no file written: run dir, caches, logs."""
    run_dir, home = tmp_path / "run", tmp_path / "hf_home"
    out = run_cli(["recipe=bert-ner", "debug=smoke", "trainer.max_steps=2", "hub.push=true",
                   "hub.repo_id=me/new-model", f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=300,
                  env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": fake_hub["endpoint"], "HF_TOKEN": HUB_TOKEN,
                       "HF_HOME": str(home), "HF_DATASETS_CACHE": str(home / "datasets")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert (run_dir / "model" / "model.safetensors").is_file()
    [line] = [l for l in out.stderr.splitlines() if "hub push failed" in l]
    assert line.startswith("warning: hub push failed") and f"hf upload me/new-model {run_dir / 'model'}" in line
    assert "hub_push_error" in json.loads((run_dir / "metrics.json").read_text())
    assert ("POST", "/api/repos/create", f"Bearer {HUB_TOKEN}") in fake_hub["requests"]  # the push was attempted
    written = [p for p in tmp_path.rglob("*") if p.is_file() and HUB_TOKEN.encode() in p.read_bytes()]
    assert written == [] and HUB_TOKEN not in out.stdout + out.stderr
