"""Every recipe end to end with debug=smoke (tiny scratch model, generated data): it trains, writes metrics.json
with its task metric, and the saved model/ reloads and predicts exactly as before saving."""

import json

import pytest
import torch

from conftest import ROOT, compose, run_pipeline

BASE_RECIPES = {"bert-ner": "test_f1", "gpt2-generation": "test_perplexity", "gpt2-instruct": "test_perplexity",
                "t5-summarization": "test_rougeL"}


@pytest.mark.parametrize("recipe,metric", sorted(BASE_RECIPES.items()))
def test_recipe_smoke_trains_and_reloads(recipe, metric, tmp_path):
    metrics = run_pipeline([f"recipe={recipe}", "debug=smoke"], tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved[metric] == pytest.approx(metrics[metric]) and saved[metric] == saved[metric]  # finite
    for key in ("train_runtime", "train_samples_per_second", "train_tokens_per_second", "trainable_params",
                "total_params", "peak_rss_mb", "seed", "versions", "dataset_fingerprint"):
        assert key in saved, key
    assert (tmp_path / "model" / "model.safetensors").is_file() and (tmp_path / "model" / "README.md").is_file()
    assert not list(tmp_path.glob("model/*.bin")), "weights and args must not be pickles"
    assert (tmp_path / "samples.jsonl").read_text().strip()
    _assert_reload_identical(recipe, tmp_path / "model")


def _assert_reload_identical(recipe, model_dir):
    import transformers

    cfg = compose([f"recipe={recipe}", "debug=smoke"])
    from pipeline.tasks import get_task

    auto = getattr(transformers, get_task(cfg).auto_class)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    a = auto.from_pretrained(model_dir).eval()
    b = auto.from_pretrained(model_dir).eval()
    batch = tok(["the old fox visited Paris"], return_tensors="pt")
    if a.config.is_encoder_decoder:
        batch["decoder_input_ids"] = torch.tensor([[a.config.decoder_start_token_id]])
    with torch.no_grad():
        assert torch.equal(a(**batch).logits, b(**batch).logits)


def test_smoke_ner_learns(tmp_path):
    """The tiny NER model really learns the generated data: loss falls and validation F1 (sentences like the
    training ones) is far above zero. (The test split holds names and templates training never shows.)"""
    metrics = run_pipeline(["recipe=bert-ner", "debug=smoke"], tmp_path)
    assert metrics["eval_f1"] > 0.3
    assert metrics["train_loss"] < 2.0


def test_saved_model_matches_trained_model(tmp_path):
    """Logits of the reloaded model/ equal those of the in-memory model at the end of the run."""
    import transformers
    from pipeline.run import run

    cfg = compose(["recipe=bert-ner", "debug=smoke", "trainer.num_train_epochs=1"])
    captured = {}
    orig = transformers.Trainer.save_model

    def spy(self, output_dir=None, _internal_call=False):
        captured["model"] = self.model
        return orig(self, output_dir, _internal_call)

    transformers.Trainer.save_model = spy
    try:
        run(cfg, tmp_path)
    finally:
        transformers.Trainer.save_model = orig
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "model")
    reloaded = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "model").eval()
    batch = tok(["Angela Merkel visited Paris ."], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(captured["model"].eval()(**batch).logits, reloaded(**batch).logits, atol=1e-6)
