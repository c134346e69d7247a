"""Causal-LM fine-tuning: documents joined with EOS, cut into full blocks (packing: no padding, no pad token
needed during training). EOS keeps its label, so the model learns where documents end."""

from __future__ import annotations

import math

from pipeline.errors import DataError
from pipeline.tasks.base import Task


def group_texts(input_ids: list[list[int]], block_size: int) -> list[list[int]]:
    """Concatenate tokenised documents and cut them into ``block_size`` chunks; the tail shorter than a block is
    dropped (as in the transformers example)."""
    flat = [t for ids in input_ids for t in ids]
    total = (len(flat) // block_size) * block_size
    return [flat[i:i + block_size] for i in range(0, total, block_size)]


def model_max_positions(model) -> int | None:
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    return None


class GenerationTask(Task):
    name = "generation"
    auto_class = "AutoModelForCausalLM"
    columns = ("text",)

    def tokenizer_corpus(self, raw):
        return iter(raw["train"]["text"])

    def block_size(self, model) -> int:
        limit = model_max_positions(model)
        return min(int(self.tcfg.block_size), limit) if limit else int(self.tcfg.block_size)

    def preprocess(self, raw, tokenizer, model):
        eos, block = tokenizer.eos_token_id, self.block_size(model)
        if eos is None:
            raise DataError(f"tokenizer of {self.cfg.model.name_or_path} has no EOS token to separate documents")

        def tokenize(batch):
            ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
            return {"input_ids": [x + [eos] for x in ids]}

        def pack(batch):
            blocks = group_texts(batch["input_ids"], block)
            return {"input_ids": blocks, "attention_mask": [[1] * block for _ in blocks],
                    "labels": [list(b) for b in blocks]}

        tok = raw.map(tokenize, batched=True, remove_columns=["text"], num_proc=self.cfg.data.num_proc,
                      desc="tokenize")
        packed = tok.map(pack, batched=True, batch_size=1000, num_proc=self.cfg.data.num_proc,
                         desc=f"pack into blocks of {block}")
        for split, d in packed.items():
            if len(d) == 0:
                n = sum(len(x) for x in tok[split]["input_ids"])
                raise DataError(f"split '{split}' has {n} tokens, fewer than one block of {block}; lower "
                                f"task.block_size or add data")
        return packed

    def collator(self, tokenizer, model):
        from transformers import default_data_collator

        return default_data_collator  # blocks are full: nothing to pad, labels already hold EOS

    def postprocess_metrics(self, metrics, prefix):
        from pipeline.metrics import load_metric

        loss = metrics.get(f"{prefix}_loss")
        if loss is not None and math.isfinite(loss):
            ppl = load_metric("perplexity").compute(losses=[loss], weights=[1])["perplexity"]
            metrics[f"{prefix}_perplexity"] = ppl
        return metrics

    def samples(self, trainer, tokenizer, raw_split, tokenized_split, n):
        from pipeline.predict import generate_from_ids  # the code path of finetune-predict

        texts = raw_split["text"][:n]
        prompts = [ids[: self.tcfg.prompt_tokens] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        completions = generate_from_ids(trainer.model.eval(), tokenizer, prompts, dict(self.tcfg.generation))
        return [{"prompt": tokenizer.decode(p), "completion": c} for p, c in zip(prompts, completions)]


TASK_CLASS = GenerationTask
