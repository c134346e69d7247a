"""Summarization with encoder-decoder models: source/target tokenisation, ROUGE on generated summaries."""

from __future__ import annotations

import numpy as np

from pipeline.families import get_family
from pipeline.tasks.base import Task


class SummarizationTask(Task):
    name = "summarization"
    auto_class = "AutoModelForSeq2SeqLM"
    columns = ("document", "summary")

    @property
    def prefix(self) -> str:
        p = self.tcfg.source_prefix
        return get_family(self.cfg.model.family).source_prefix if p == "auto" else (p or "")

    def tokenizer_corpus(self, raw):
        return (d + "\n" + s for d, s in zip(raw["train"]["document"], raw["train"]["summary"]))

    def preprocess(self, raw, tokenizer, model):
        prefix, src_len, tgt_len = self.prefix, self.tcfg.max_source_length, self.tcfg.max_target_length

        def encode(batch):
            enc = tokenizer([prefix + d for d in batch["document"]], max_length=src_len, truncation=True)
            enc["labels"] = tokenizer(text_target=batch["summary"], max_length=tgt_len, truncation=True)["input_ids"]
            return enc

        return raw.map(encode, batched=True, remove_columns=list(self.columns), num_proc=self.cfg.data.num_proc,
                       desc="tokenize source/target")

    def collator(self, tokenizer, model):
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)

    def trainer_classes(self):
        from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

        return Seq2SeqTrainer, Seq2SeqTrainingArguments

    def training_args_extra(self):
        return {"predict_with_generate": True, "generation_num_beams": int(self.tcfg.generation.num_beams),
                "generation_max_length": int(self.tcfg.max_target_length)}

    def decode(self, tokenizer, ids):
        ids = np.where(ids < 0, tokenizer.pad_token_id, ids)  # generated preds are padded with -100
        return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def compute_metrics(self, tokenizer):
        from pipeline.metrics import load_metric

        rouge = load_metric("rouge")

        def compute(eval_pred):
            preds = self.decode(tokenizer, eval_pred.predictions)
            refs = self.decode(tokenizer, eval_pred.label_ids)
            scores = rouge.compute(predictions=preds, references=refs)
            scores["gen_len"] = float(np.mean([len(p.split()) for p in preds]))
            return scores

        return compute

    def samples(self, trainer, tokenizer, raw_split, tokenized_split, n):
        from pipeline.predict import summarize  # the code path of finetune-predict

        rows = raw_split.select(range(min(n, len(raw_split))))
        preds = summarize(trainer.model.eval(), tokenizer, rows["document"], self.prefix, dict(self.tcfg.generation),
                          int(self.tcfg.max_source_length))
        return [{"document": d, "reference": s, "generated": g} for d, s, g in zip(rows["document"], rows["summary"], preds)]

    def tokens_per_sample(self, tokenized_split):
        src = sum(len(x) for x in tokenized_split["input_ids"])
        tgt = sum(len(x) for x in tokenized_split["labels"])
        return (src + tgt) / max(1, len(tokenized_split))


TASK_CLASS = SummarizationTask
