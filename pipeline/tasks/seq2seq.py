"""Shared code of the encoder-decoder tasks (summarization, translation, generative QA): a source text and a target
text per row, ``Seq2SeqTrainer`` with generation at evaluation, and generated text for samples and predict. A
subclass says how a row becomes its source and target (``sources`` / ``targets``) and how outputs are scored
(``score``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from omegaconf import MISSING

from pipeline.tasks import base
from pipeline.tasks.base import Task, batches


@dataclass
class Config(base.Config):
    max_source_length: int = MISSING
    max_target_length: int = MISSING
    generation: dict = field(default_factory=dict)


class Seq2SeqTask(Task):
    Config = Config
    archs = ("encoder-decoder",)
    auto_class = "AutoModelForSeq2SeqLM"
    peft_task_type = "SEQ_2_SEQ_LM"
    length_keys = ("max_source_length",)

    # -- what a subclass defines -------------------------------------------------------------------------------
    def sources(self, batch: dict) -> list[str]:
        """Model inputs (prefix included) of a batch of raw rows."""
        raise NotImplementedError

    def targets(self, batch: dict) -> list[str]:
        raise NotImplementedError

    def score(self, predictions: list[str], references: list[str]) -> dict:
        raise NotImplementedError

    def sample_row(self, row: dict, generated: str) -> dict:
        return {**row, "generated": generated}

    # -- shared ------------------------------------------------------------------------------------------------
    def tokenizer_corpus(self, raw):
        batch = raw["train"].to_dict()
        return (s + "\n" + t for s, t in zip(self.sources(batch), self.targets(batch)))

    def preprocess(self, raw, tokenizer, model):
        src_len, tgt_len = self.tcfg.max_source_length, self.tcfg.max_target_length

        def encode(batch):
            enc = tokenizer(self.sources(batch), max_length=src_len, truncation=True)
            target = tokenizer(text_target=self.targets(batch), max_length=tgt_len, truncation=True)
            enc["labels"] = target["input_ids"]
            enc[f"{base.CUT}max_source_length"] = base.cut_flags(enc)  # counted by cut_counts, then removed
            enc[f"{base.CUT}max_target_length"] = base.cut_flags(target)
            return enc

        return raw.map(encode, batched=True, remove_columns=raw["train"].column_names,
                       num_proc=self.cfg.data.num_proc, desc="tokenize source/target")

    def collator(self, tokenizer, model):
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)

    def trainer_classes(self):
        from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

        return Seq2SeqTrainer, Seq2SeqTrainingArguments

    def training_args_extra(self):
        gen = self.generation_settings()
        return {"predict_with_generate": True, "generation_num_beams": int(gen.get("num_beams") or 1),
                "generation_max_length": int(self.tcfg.max_target_length)}

    def decode(self, tokenizer, ids):
        ids = np.where(ids < 0, tokenizer.pad_token_id, ids)  # generated preds are padded with -100
        return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def compute_metrics(self, tokenizer):
        def compute(eval_pred):
            preds = self.decode(tokenizer, eval_pred.predictions)
            scores = self.score(preds, self.decode(tokenizer, eval_pred.label_ids))
            scores["gen_len"] = float(np.mean([len(p.split()) for p in preds]))
            return scores

        return compute

    def samples(self, trainer, tokenizer, raw_split, tokenized_split, n):
        rows = raw_split.select(range(min(n, len(raw_split))))
        preds = self.generate(trainer.model.eval(), tokenizer, self.sources(rows.to_dict()),
                              self.generation_settings())
        return [self.sample_row(row, g) for row, g in zip(rows, preds)]

    def tokens_per_sample(self, tokenized_split):
        src = sum(len(x) for x in tokenized_split["input_ids"])
        tgt = sum(len(x) for x in tokenized_split["labels"])
        return (src + tgt) / max(1, len(tokenized_split))

    def generate(self, model, tokenizer, sources: list[str], gen: dict, batch_size: int = 8,
                 progress: bool = False) -> list[str]:
        """Generated text for each source (truncated to ``max_source_length`` tokens)."""
        import torch

        out = []
        for chunk in batches(sources, batch_size, progress, self.name):
            enc = tokenizer(chunk, max_length=int(self.tcfg.max_source_length), truncation=True, padding=True,
                            return_tensors="pt").to(model.device)
            with torch.no_grad():
                seq = model.generate(**enc, **gen)
            out.extend(t.strip() for t in tokenizer.batch_decode(seq, skip_special_tokens=True))
        return out

    def predict(self, model, tokenizer, rows, batch_size=8, progress=False, generation=None, **options):
        batch = {k: [r.get(k) for r in rows] for k in rows[0]}
        return self.generate(model, tokenizer, self.sources(batch), self.generation_settings(generation),
                             batch_size, progress)
