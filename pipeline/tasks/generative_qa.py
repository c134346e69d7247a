"""Generative question answering with encoder-decoder models: ``question: … context: …`` -> the answer text, scored
with SQuAD exact match / F1 of the generated text against every reference answer (the first is the target)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from omegaconf import MISSING

from pipeline.tasks import qa_common, seq2seq
from pipeline.tasks.seq2seq import Seq2SeqTask


@dataclass
class Config(seq2seq.Config):
    source_template: str = MISSING    # the model input: {question} and {context} filled in


class GenerativeQaTask(qa_common.SplitsKept, Seq2SeqTask):
    name = "generative-qa"
    Config = Config
    pipeline_tag = "text2text-generation"
    card_metric_type = "squad"
    columns = qa_common.COLUMNS
    input_fields = ("question", "context")
    input_aliases = qa_common.INPUT_ALIASES
    output_field = "answer"

    def synthetic_row(self, rng, split):
        return qa_common.synthetic_row(rng, split)

    def clean(self, split, d):
        return qa_common.clean(split, d)

    def sources(self, batch):
        template = str(self.tcfg.source_template)
        return [template.format(question=str(q).strip(), context=c) for q, c in zip(batch["question"],
                                                                                  batch["context"])]

    def targets(self, batch):
        return [a["text"][0] for a in batch["answers"]]

    def score(self, predictions, references):
        return qa_common.squad_scores(predictions, references)

    def sample_row(self, row, generated):
        return {"question": row["question"], "context": row["context"], "gold": row["answers"]["text"],
                "generated": generated}

    def preprocess(self, raw, tokenizer, model):
        """Source / target ids (``Seq2SeqTask``); the answers of inputs cut at ``task.max_source_length`` are
        counted (the model cannot read them) and logged."""
        tokenized = super().preprocess(raw, tokenizer, model)
        self.splits = {split: (raw[split], tokenized[split]) for split in raw}
        self.count_unreadable(raw, tokenizer)
        return tokenized

    def count_unreadable(self, raw, tokenizer) -> dict:
        """{split: questions whose (first) answer ends beyond ``task.max_source_length`` tokens of the input}."""
        template, limit, out = str(self.tcfg.source_template), int(self.tcfg.max_source_length), {}
        head = template[:template.index("{context}")]
        for split, d in raw.items():
            batch = d.to_dict()
            enc = tokenizer(self.sources(batch), max_length=limit, truncation=True, return_offsets_mapping=True)
            out[split] = sum(1 for offs, q, a in zip(enc["offset_mapping"], batch["question"], batch["answers"])
                             if max(e for _, e in offs) < len(head.format(question=str(q).strip()))
                             + a["answer_start"][0] + len(a["text"][0]))
        if any(out.values()):
            logging.getLogger("pipeline").warning(
                "data: answers beyond task.max_source_length=%s tokens (cut from the input): %s", limit, out)
        return out

    def metrics_of(self, raw_split, tokenizer):
        """compute_metrics for one split: generated answers against all its reference answers (rows in order)."""
        refs = qa_common.references(raw_split)

        def compute(eval_pred):
            preds = self.decode(tokenizer, eval_pred.predictions)
            scores = self.score(preds, refs)
            scores["gen_len"] = float(np.mean([len(p.split()) for p in preds]))
            return scores

        return compute

    def compute_metrics(self, tokenizer):
        return self.metrics_of(self.splits["validation"][0], tokenizer)

    def split_metrics(self, raw_split, tokenized_split, tokenizer):
        return self.metrics_of(raw_split, tokenizer)

    def evaluate(self, trainer, raw_split, tokenized_split, prefix):
        return qa_common.evaluate_with(trainer, self.metrics_of(raw_split, trainer.processing_class), tokenized_split,
                                       prefix)


TASK_CLASS = GenerativeQaTask
