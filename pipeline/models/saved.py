"""A finished run's saved model: the full model, or a PEFT adapter over its base (``load_model``), and merging an
adapter into a full model whose outputs are checked against the adapter model's (``merge``, finetune-export).

A PEFT run's ``model/`` holds the adapter in PEFT format (adapter_config.json + adapter_model.safetensors, loadable
with ``PeftModel.from_pretrained(base, model_dir)``), the tokenizer, and ``base/`` with the base model's config
(task labels) and, for a scratch base, its weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from peft import PeftModel

from pipeline.errors import ConfigError, ModelError

AUTO_BY_TASK_TYPE = {"TOKEN_CLS": "AutoModelForTokenClassification", "CAUSAL_LM": "AutoModelForCausalLM",
                     "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM", "SEQ_CLS": "AutoModelForSequenceClassification",
                     "QUESTION_ANS": "AutoModelForQuestionAnswering"}  # peft.TaskType -> transformers Auto class
NOT_MERGEABLE = ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING")
PROBE = ["Angela Merkel visited Paris in May .", "the old fox jumped over the lazy dog"]


def model_dir_of(path) -> Path:
    path = Path(path)
    for candidate in (path / "model", path):
        if (candidate / "adapter_config.json").is_file() or (candidate / "config.json").is_file():
            return candidate
    raise ModelError(f"{path}: no model/ with adapter_config.json or config.json; give a finished run directory")


def load_model(model_dir):
    """The adapter model of a run (PeftModel over its base), in eval mode."""
    model_dir = Path(model_dir)
    acfg = json.loads((model_dir / "adapter_config.json").read_text())
    auto = getattr(transformers, AUTO_BY_TASK_TYPE[acfg["task_type"]])
    base_dir = model_dir / "base"
    config = transformers.AutoConfig.from_pretrained(base_dir)
    source = base_dir if (base_dir / "model.safetensors").is_file() else acfg["base_model_name_or_path"]
    kwargs = {"ignore_mismatched_sizes": True} if acfg["task_type"] == "TOKEN_CLS" else {}  # head: from the adapter
    rows, pad = getattr(config, "vocab_size", None), getattr(config, "pad_token_id", None)
    own = transformers.AutoConfig.from_pretrained(source) if source != base_dir else config
    grown = rows and getattr(own, "vocab_size", rows) != rows
    if grown:  # the run grew the embeddings (load.py _fit_embeddings): load them as they are, then grow them
        config.vocab_size, config.pad_token_id = own.vocab_size, getattr(own, "pad_token_id", None)
    base = auto.from_pretrained(source, config=config, **kwargs)
    if grown:
        base.resize_token_embeddings(rows)
        base.config.pad_token_id = pad
    return PeftModel.from_pretrained(base, model_dir).eval()


def probe_batch(tokenizer, model):
    batch = tokenizer(PROBE, return_tensors="pt", padding=True)
    if model.config.is_encoder_decoder:
        batch["decoder_input_ids"] = torch.full((len(PROBE), 1), model.config.decoder_start_token_id)
    return batch


def outputs(model, batch):
    """Every score tensor of the model's output (logits; start and end logits for span models), concatenated."""
    with torch.no_grad():
        out = model(**batch)
    return torch.cat([v.flatten() for k, v in out.items() if k.endswith("logits") and torch.is_tensor(v)])


def merge(run_dir, out=None, atol: float = 1e-4) -> tuple[Path, float]:
    """Merge the adapter into the base weights, save a full model, check its logits equal the adapter model's."""
    model_dir = model_dir_of(run_dir)
    if not (model_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{model_dir} is already a full model (method=full or freeze): nothing to merge")
    acfg = json.loads((model_dir / "adapter_config.json").read_text())
    if acfg["peft_type"] in NOT_MERGEABLE:
        raise ConfigError(f"{model_dir}: {acfg['peft_type']} adds virtual tokens, there are no weights to merge "
                          f"into; load it with PeftModel.from_pretrained (pipeline.models.saved.load_model)")
    out = Path(out) if out else Path(run_dir) / "merged"
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    adapter_model = load_model(model_dir)
    batch = probe_batch(tokenizer, adapter_model)
    expected = outputs(adapter_model, batch)
    merged = adapter_model.merge_and_unload()
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    auto = getattr(transformers, AUTO_BY_TASK_TYPE[acfg["task_type"]])
    got = outputs(auto.from_pretrained(out).eval(), batch)
    diff = (got - expected).abs().max().item()
    if not torch.allclose(got, expected, atol=atol, rtol=1e-4):
        raise ModelError(f"merged model differs from the adapter model (max |diff| {diff:.2e} > {atol}); "
                         f"{out} is not a faithful export")
    return out, diff
