"""Extractive question answering (SQuAD): an encoder predicts the start and end token of the answer in the context.

Contexts longer than ``task.max_length`` are read in windows overlapping by ``task.doc_stride`` tokens; each window
is one feature labelled with the answer's tokens, or with the CLS token when the window does not hold the whole
answer. Metrics are per question: the best span of at most ``task.max_answer_length`` tokens over all its windows,
scored with SQuAD exact match / F1 against every reference answer (``qa_spans.py``, ``qa_common.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from pipeline.errors import ConfigError
from pipeline.tasks import base, qa_common
from pipeline.tasks.base import CUT, Task, batches
from pipeline.tasks.qa_spans import best_spans, windows


@dataclass
class Config(base.Config):
    max_length: int = MISSING          # tokens per window: question + context part + special tokens
    doc_stride: int = MISSING          # tokens shared by consecutive windows of a long context
    max_answer_length: int = MISSING   # longest answer span (tokens) post-processing may return
    n_best_size: int = MISSING         # start / end candidates per window


class ShiftPositions:
    """Prompt tuning / P-tuning put ``n`` virtual tokens before the input: start / end logits have ``n`` more
    positions, so the start / end labels move ``n`` to the right (CLS labels included)."""

    def __init__(self, collator, num_virtual_tokens: int):
        self.collator, self.n = collator, int(num_virtual_tokens)

    def __call__(self, features):
        batch = self.collator(features)
        for key in ("start_positions", "end_positions"):
            if key in batch:
                batch[key] = batch[key] + self.n
        return batch


class RightPadding:
    """Dynamic padding on the right whatever the tokenizer's side: logit positions stay token positions, so the
    offsets of a feature index its logits directly (eval batches are also concatenated padded on the right)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, features):
        keep = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")
        rows = [{k: v for k, v in f.items() if k in keep} for f in features]
        return self.tokenizer.pad(rows, padding=True, padding_side="right", return_tensors="pt")


def uses_token_types(model) -> bool:
    """Segment ids (question 0, context 1) for models with a token-type embedding of several types (BERT)."""
    return int(getattr(model.config, "type_vocab_size", 0) or 0) > 1


def pass_token_types(model) -> None:
    """peft 0.21's ``PeftModelForQuestionAnswering.forward`` drops ``token_type_ids`` outside prompt learning (it
    names the argument and does not pass it on): a LoRA-type adapter would train without segment ids and the merged
    model then see them. Two forward pre-hooks hand them from the PEFT model to the model it wraps."""
    config = getattr(model, "active_peft_config", None)
    if config is None or config.is_prompt_learning:
        return
    seen = {}

    def take(module, args, kwargs):
        seen["token_type_ids"] = kwargs.get("token_type_ids")

    def give(module, args, kwargs):
        if kwargs.get("token_type_ids") is None and seen.get("token_type_ids") is not None:
            return args, {**kwargs, "token_type_ids": seen["token_type_ids"]}
        return None

    model.register_forward_pre_hook(take, with_kwargs=True)
    model.get_base_model().register_forward_pre_hook(give, with_kwargs=True)


def virtual_token_count(model) -> int:
    """Leading logit positions of a prompt-tuned PEFT model that are virtual tokens (0 for any other model)."""
    config = getattr(model, "active_peft_config", None)
    return int(config.num_virtual_tokens) if config is not None and config.is_prompt_learning else 0


class QaTask(qa_common.SplitsKept, Task):
    name = "qa"
    Config = Config
    archs = ("encoder",)
    auto_class = "AutoModelForQuestionAnswering"
    peft_task_type = "QUESTION_ANS"
    pipeline_tag = "question-answering"
    card_metric_type = "squad"
    columns = qa_common.COLUMNS
    head_names = ("qa_outputs",)
    length_keys = ("max_length",)
    input_fields = ("question", "context")
    input_aliases = qa_common.INPUT_ALIASES
    output_field = "answer"
    virtual_token_note = "positions shifted"
    skip = 0  # virtual tokens before the input (set by virtual_tokens for a prompt-tuning run)

    # -- data --------------------------------------------------------------------------------------------------
    def synthetic_row(self, rng, split):
        return qa_common.synthetic_row(rng, split)

    def clean(self, split, d):
        return qa_common.clean(split, d)

    def tokenizer_corpus(self, raw):
        return (q + "\n" + c for q, c in zip(raw["train"]["question"], raw["train"]["context"]))

    def _check_lengths(self, tokenizer):
        if not tokenizer.is_fast:
            raise ConfigError(f"task={self.name} needs a fast tokenizer (character offsets); "
                              f"{type(tokenizer).__name__} is not one")
        max_len, stride = int(self.tcfg.max_length), int(self.tcfg.doc_stride)
        if not 0 <= stride < max_len // 2:
            raise ConfigError(f"task.doc_stride={stride} must be below half of task.max_length={max_len} (windows "
                              f"also hold the question); e.g. task.doc_stride={max_len // 4}")

    def preprocess(self, raw, tokenizer, model):
        """Windows of every split with start / end labels (validation and test too: their loss is reported) and
        the example id + context offsets that post-processing reads (the Trainer drops them from model inputs)."""
        self._check_lengths(tokenizer)
        max_len, stride = int(self.tcfg.max_length), int(self.tcfg.doc_stride)

        types = uses_token_types(model)

        def encode(batch):
            feats = windows(tokenizer, batch["question"], batch["context"], max_len, stride, batch["answers"], types)
            feats[CUT + "max_length"] = feats.pop("question_cut")  # counted once per question (metrics.json)
            return feats

        tokenized = raw.map(encode, batched=True, remove_columns=list(self.columns), num_proc=self.cfg.data.num_proc,
                            desc="tokenize into windows + label spans")
        self.splits = {split: (raw[split], tokenized[split]) for split in raw}
        return tokenized

    def collator(self, tokenizer, model):
        return RightPadding(tokenizer)

    def trainer_classes(self):
        from transformers import Trainer, TrainingArguments

        class QaTrainer(Trainer):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                pass_token_types(self.model)

        QaTrainer.__name__ = QaTrainer.__qualname__ = "Trainer"
        return QaTrainer, TrainingArguments

    def virtual_tokens(self, collator, num_virtual_tokens):
        self.skip = int(num_virtual_tokens)
        return ShiftPositions(collator, num_virtual_tokens)

    # -- metrics -----------------------------------------------------------------------------------------------
    def answers_from_logits(self, raw_split, features, start_logits, end_logits, skip: int) -> list[dict]:
        offsets = [o for batch in features.select_columns(["offset_mapping"]).iter(batch_size=1000)
                   for o in batch["offset_mapping"]]
        return best_spans(raw_split["context"], features["example_id"], offsets, start_logits, end_logits,
                          int(self.tcfg.n_best_size), int(self.tcfg.max_answer_length), skip)

    def metrics_of(self, raw_split, features):
        """compute_metrics for one split: features' logits -> best answer per question -> SQuAD EM / F1."""

        def compute(eval_pred):
            start_logits, end_logits = eval_pred.predictions[:2]
            answers = self.answers_from_logits(raw_split, features, start_logits, end_logits, self.skip)
            return qa_common.squad_scores([a["answer"] for a in answers], qa_common.references(raw_split))

        return compute

    def compute_metrics(self, tokenizer):
        return self.metrics_of(*self.splits["validation"])  # eval during training: selects the checkpoint

    def split_metrics(self, raw_split, tokenized_split, tokenizer):
        return self.metrics_of(raw_split, tokenized_split)

    def evaluate(self, trainer, raw_split, tokenized_split, prefix):
        return qa_common.evaluate_with(trainer, self.metrics_of(raw_split, tokenized_split), tokenized_split, prefix)

    def samples(self, trainer, tokenizer, raw_split, tokenized_split, n):
        rows = raw_split.select(range(min(n, len(raw_split))))
        preds = self.predict(trainer.model.eval(), tokenizer, [{"question": r["question"], "context": r["context"]}
                                                               for r in rows])
        return [{"question": r["question"], "context": r["context"], "gold": r["answers"]["text"], "predicted": p}
                for r, p in zip(rows, preds)]

    # -- inference ---------------------------------------------------------------------------------------------
    def predict(self, model, tokenizer, rows, batch_size=8, progress=False, generation=None, **options):
        """``{"answer", "start", "end", "score"}`` per (question, context) with ``context[start:end] == answer``;
        long contexts are read in windows, the best span over all of them is the answer (as in evaluation)."""
        import torch

        questions, contexts = [str(r["question"]) for r in rows], [str(r["context"]) for r in rows]
        feats = windows(tokenizer, questions, contexts, int(self.tcfg.max_length), int(self.tcfg.doc_stride),
                        token_types=uses_token_types(model))
        inputs = [{k: feats[k][i] for k in ("input_ids", "attention_mask", "token_type_ids") if k in feats}
                  for i in range(len(feats["input_ids"]))]
        pad, skip = RightPadding(tokenizer), virtual_token_count(model)
        starts, ends = [], []
        for chunk in batches(inputs, batch_size, progress, self.name):
            batch = {k: v.to(model.device) for k, v in pad(chunk).items()}
            with torch.no_grad():
                out = model(**batch)
            starts += list(out.start_logits.float().cpu().numpy())
            ends += list(out.end_logits.float().cpu().numpy())
        return best_spans(contexts, feats["example_id"], feats["offset_mapping"], starts, ends,
                          int(self.tcfg.n_best_size), int(self.tcfg.max_answer_length), skip)


TASK_CLASS = QaTask
