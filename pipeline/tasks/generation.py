"""Causal-LM fine-tuning: documents joined with EOS, cut into full blocks (packing: no padding, no pad token
needed during training). EOS keeps its label, so the model learns where documents end."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import MISSING

from pipeline.data import synthetic as gen
from pipeline.errors import DataError
from pipeline.tasks import base
from pipeline.tasks.base import Task, batches


def group_texts(input_ids: list[list[int]], block_size: int) -> list[list[int]]:
    """Concatenate tokenised documents and cut them into ``block_size`` chunks; the tail shorter than a block is
    dropped (as in the transformers example)."""
    flat = [t for ids in input_ids for t in ids]
    total = (len(flat) // block_size) * block_size
    return [flat[i:i + block_size] for i in range(0, total, block_size)]


def tokens_in(d) -> int:
    """Tokens in a dataset's ``input_ids`` column (summed in Arrow)."""
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_value_length(d.data.column("input_ids"))).as_py() or 0)


def model_max_positions(model) -> int | None:
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    return None


@dataclass
class Config(base.Config):
    block_size: int = MISSING
    prompt_tokens: int = MISSING
    generation: dict = field(default_factory=dict)


class GenerationTask(Task):
    name = "generation"
    Config = Config
    archs = ("decoder",)
    auto_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    pipeline_tag = "text-generation"
    card_metric_type = "perplexity"
    columns = ("text",)
    input_fields = ("prompt",)
    input_aliases = {"prompt": ("text",)}
    output_field = "completion"

    def synthetic_row(self, rng, split):
        sents = []
        for _ in range(rng.randint(3, 6)):
            a, v, t = rng.choice(gen.ANIMAL), rng.choice(gen.VERB), rng.choice(gen.THING)
            sents.append(f"The {rng.choice(gen.ADJ)} {a} {v} the {t} near the {rng.choice(gen.THING)}.")
        return {"text": " ".join(sents)}

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
        self.tail_tokens = {}
        for split, d in packed.items():
            n = tokens_in(tok[split])
            if len(d) == 0:
                raise DataError(f"split '{split}' has {n} tokens, fewer than one block of {block}; lower "
                                f"task.block_size or add data")
            self.tail_tokens[split] = (n - len(d) * block, n, block)
        return packed

    def cut_counts(self, tokenized):
        """Packing trains on full blocks: the tokens after the last full block (of each batch of 1000 documents)
        are dropped; counted per split and warned about."""
        import logging

        tokenized, counts = super().cut_counts(tokenized)
        for split, (dropped, total, block) in getattr(self, "tail_tokens", {}).items():
            if dropped:
                counts.setdefault(split, {})["tokens_after_last_block"] = dropped
                logging.getLogger("pipeline").warning(
                    "data: %d of %d %s tokens do not fill a block of %d (task.block_size) and are not used", dropped,
                    total, split, block)
        return tokenized, counts

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
        texts = raw_split["text"][:n]
        prompts = [ids[: self.tcfg.prompt_tokens] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        completions = generate_from_ids(trainer.model.eval(), tokenizer, prompts, self.generation_settings())
        return [{"prompt": tokenizer.decode(p), "completion": c} for p, c in zip(prompts, completions)]

    def predict(self, model, tokenizer, rows, batch_size=8, progress=False, generation=None, **options):
        ids = tokenizer([str(r["prompt"]) for r in rows], add_special_tokens=False)["input_ids"]
        return generate_from_ids(model, tokenizer, ids, self.generation_settings(generation), batch_size, progress)


def generate_from_ids(model, tokenizer, input_ids: list[list[int]], gen: dict, batch_size: int = 8,
                      progress: bool = False) -> list[str]:
    """Decoder LM: continue each prompt (token ids), left-padded batches; returns only the new text."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    rows = [ids or [start] for ids in input_ids]  # an empty prompt starts from BOS
    out = []
    for chunk in batches(rows, batch_size, progress, "generate"):
        width = max(len(r) for r in chunk)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in chunk], device=model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in chunk], device=model.device)
        with torch.no_grad():
            seq = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **gen)
        out.extend(tokenizer.batch_decode(seq[:, width:], skip_special_tokens=True))
    return out


TASK_CLASS = GenerationTask
