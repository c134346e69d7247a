"""Every recipe end to end with debug=smoke (tiny scratch model, generated data): it trains, writes metrics.json
with its task metric, and the saved model/ reloads and predicts exactly as the in-memory model did before saving."""

import json

import pytest
import torch

from conftest import ROOT, compose, run_pipeline

BASE_RECIPES = {"bert-ner": "test_f1", "gpt2-generation": "test_perplexity", "gpt2-instruct": "test_perplexity", "t5-summarization": "test_rougeL",
                "bert-classification": "test_accuracy", "t5-translation": "test_bleu",
                "bert-qa": "test_f1", "t5-qa": "test_f1"}


@pytest.mark.parametrize("recipe,metric", sorted(BASE_RECIPES.items()))
def test_recipe_smoke_trains_and_reloads_as_before_saving(recipe, metric, tmp_path, monkeypatch):
    import transformers

    captured = {}
    orig = transformers.Trainer.save_model

    def spy(self, output_dir=None, _internal_call=False):
        if output_dir and str(output_dir).endswith(".model.partial"):  # the final model/, not a checkpoint
            captured["logits"] = _logits(self.model, self.processing_class)
        return orig(self, output_dir, _internal_call)

    monkeypatch.setattr(transformers.Trainer, "save_model", spy)
    metrics = run_pipeline([f"recipe={recipe}", "debug=smoke"], tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved[metric] == pytest.approx(metrics[metric]) and saved[metric] == saved[metric]  # finite
    for key in ("train_runtime", "train_samples_per_second", "train_tokens_per_second", "trainable_params",
                "total_params", "peak_rss_mb", "seed", "versions", "dataset_fingerprint"):
        assert key in saved, key
    assert (tmp_path / "model" / "model.safetensors").is_file() and (tmp_path / "model" / "README.md").is_file()
    assert not list(tmp_path.glob("model/*.bin")), "weights and args must not be pickles"
    assert_samples_line_up_with_their_rows(recipe, tmp_path)
    assert_documented_smoke_figure(recipe, metric, saved[metric])
    from pipeline.tasks import get_task

    auto = getattr(transformers, get_task(compose([f"recipe={recipe}", "debug=smoke"])).auto_class)
    reloaded = auto.from_pretrained(tmp_path / "model")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "model")
    assert torch.equal(_logits(reloaded, tok), captured["logits"])  # the model in memory when it was saved


LABELS = {"test_f1": "F1", "test_perplexity": "perplexity", "test_rougeL": "ROUGE-L", "test_accuracy": "accuracy",
          "test_bleu": "BLEU"}


def assert_documented_smoke_figure(recipe, metric, value):
    """recipes/README.md's smoke table states what this run measures (its headline, at the doc's precision)."""
    import re

    row = next(line for line in (ROOT / "recipes" / "README.md").read_text().splitlines()
               if line.startswith(f"| `{recipe}` | `finetune recipe={recipe} debug=smoke`"))
    found = re.search(rf"test {re.escape(LABELS[metric])} (-?[0-9.]+)(?:\u2013([0-9.]+))?", row.split("|")[4])
    assert found, f"recipes/README.md's smoke row of {recipe} states no test {LABELS[metric]}: {row}"
    low, high = float(found.group(1)), float(found.group(2) or found.group(1))  # a value, or a range a–b
    slack = max(0.05, 0.1 * abs(value))
    assert low - slack <= value <= high + slack, \
        f"recipes/README.md says {recipe} smoke test {LABELS[metric]} {found.group(0)}; this run measured {value:.4f}"


# the sample key holding a row's gold value, and the raw column it comes from (tasks whose samples show it)
GOLD = {"gold": ("tags", "label", "answers"), "reference": ("summary", "de")}


def assert_samples_line_up_with_their_rows(recipe, run_dir):
    """samples.jsonl row i shows test row i: its input fields and its gold equal that row's, whatever the batch order
    (test rows differ in length; training batches are length-grouped)."""
    from pipeline.data import load_raw
    from pipeline.tasks import get_task

    cfg = compose([f"recipe={recipe}", "debug=smoke"])
    task = get_task(cfg)
    raw, _, _ = load_raw(cfg.data, task, int(cfg.seed))
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == min(int(cfg.num_samples), len(raw["test"]))
    lengths = {len(json.dumps(dict(r))) for r in raw["test"].select(range(len(samples)))}
    assert len(lengths) > 1, "the sampled test rows must differ in length for this check to mean anything"
    for i, sample in enumerate(samples):
        row = raw["test"][i]
        shared = [k for k in sample if k in row]
        for key in shared:
            assert sample[key] == row[key], (i, key, sample[key], row[key])
        for key, columns in GOLD.items():
            column = next((c for c in columns if c in row), None)
            if key in sample and column:
                gold = row[column]["text"] if column == "answers" else row[column]
                assert sample[key] == gold, (i, key, sample[key], gold)
        assert shared or task.name == "generation", f"sample {i} shows none of its row's fields: {sorted(sample)}"


def _logits(model, tok):
    """Logits of ``model`` (eval mode, no grad) on a fixed probe batch, every ``*logits`` output concatenated (span
    models give start and end logits); the model's mode is restored."""
    was_training = model.training
    model.eval()
    batch = tok(["the old fox visited Paris", "Angela Merkel met John Smith"], return_tensors="pt", padding=True)
    batch = {k: v.to(model.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    if model.config.is_encoder_decoder:
        batch["decoder_input_ids"] = torch.full((2, 1), model.config.decoder_start_token_id, device=model.device)
    with torch.no_grad():
        outputs = model(**batch)
    scores = [v for k, v in outputs.items() if k.endswith("logits")]
    assert scores, list(outputs.keys())
    out = torch.cat([v.detach().cpu().reshape(2, -1) for v in scores], dim=1).clone()
    model.train(was_training)
    return out


def test_smoke_ner_learns(tmp_path):
    """The tiny NER model really learns the generated data: loss falls and validation F1 (sentences like the
    training ones) is far above zero. (The test split holds names and templates training never shows.)"""
    metrics = run_pipeline(["recipe=bert-ner", "debug=smoke"], tmp_path)
    assert metrics["eval_f1"] > 0.3
    assert metrics["train_loss"] < 2.0
