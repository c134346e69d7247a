"""The interface every task implements. Stages call only these methods."""

from __future__ import annotations


class Task:
    name: str = ""
    auto_class: str = ""                  # transformers Auto class used to load / build the model
    columns: tuple = ()                   # canonical raw columns (pipeline/data)

    def __init__(self, cfg):
        self.cfg = cfg
        self.tcfg = cfg.task

    # -- data --------------------------------------------------------------------------------------------------
    def prepare(self, raw) -> None:
        """Look at the raw data once (e.g. collect the label set) before the model is built."""

    def tokenizer_corpus(self, raw):
        """Texts a scratch tokenizer is trained on (init=scratch)."""
        raise NotImplementedError

    def preprocess(self, raw, tokenizer, model):
        """Raw DatasetDict -> tokenised DatasetDict (batched, cached ``datasets.map``)."""
        raise NotImplementedError

    # -- model -------------------------------------------------------------------------------------------------
    def model_kwargs(self) -> dict:
        """Extra config kwargs for the Auto class (e.g. the label maps)."""
        return {}

    # -- training ----------------------------------------------------------------------------------------------
    def collator(self, tokenizer, model):
        raise NotImplementedError

    def trainer_classes(self):
        from transformers import Trainer, TrainingArguments

        return Trainer, TrainingArguments

    def training_args_extra(self) -> dict:
        return {}

    def compute_metrics(self, tokenizer):
        return None

    def preprocess_logits_for_metrics(self):
        return None

    def trainer_kwargs(self, tokenizer, model) -> dict:
        return {"data_collator": self.collator(tokenizer, model),
                # do_eval=false: no metric module to load (evaluate + rouge/seqeval cost ~1 s of start-up)
                "compute_metrics": self.compute_metrics(tokenizer) if self.cfg.get("do_eval", True) else None,
                "preprocess_logits_for_metrics": self.preprocess_logits_for_metrics()}

    # -- evaluation --------------------------------------------------------------------------------------------
    def postprocess_metrics(self, metrics: dict, prefix: str) -> dict:
        return metrics

    def samples(self, trainer, tokenizer, raw_split, tokenized_split, n: int) -> list[dict]:
        """A few predictions / generations written to samples.jsonl."""
        return []

    def tokens_per_sample(self, tokenized_split) -> float:
        """Mean non-padding tokens per training sample (for tokens/s)."""
        lengths = [len(x) for x in tokenized_split["input_ids"]]
        return sum(lengths) / max(1, len(lengths))
