"""Sequence classification (sentiment, topic, inference...): a text, or a text pair, -> one of N classes.

Rows have ``text``, an optional ``text_pair`` and a ``label`` (string or integer). Class ids: the names of a
ClassLabel column in its order; otherwise string labels sorted (integers by value). The names are kept in the model
config (``id2label``), so predictions are names. Metrics: accuracy, macro-F1 and F1 per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
from omegaconf import MISSING

from pipeline.data import synthetic as gen
from pipeline.data.checks import drop_rows
from pipeline.errors import ConfigError, DataError
from pipeline.metrics import load_metric
from pipeline.tasks import base
from pipeline.tasks.base import Task, batches

# Generated sentiment data: the templates' last 30% are held out for test (pool()); the sentiment words are shared,
# so a test score measures whether the model learned the words' polarity independently of sentence shape.
POSITIVE = ["wonderful", "delightful", "brilliant", "charming", "moving", "superb", "gripping", "lovely",
            "excellent", "joyful"]
NEGATIVE = ["dull", "tedious", "awful", "clumsy", "boring", "dreadful", "messy", "lifeless", "painful", "bland"]
TOPICS = ["film", "story", "ending", "cast", "soundtrack", "dialogue", "plot", "script", "performance", "camera work"]
TEMPLATES = ["the {topic} was {adj} .", "i found the {topic} {adj} from start to finish .", "what a {adj} {topic} !",
             "honestly , the {topic} is {adj} .", "the {topic} at the {place} felt {adj} on {day} .",
             "everyone agreed that the {topic} was {adj} and {adj2} .", "a {adj} {topic} , and a {adj2} one too .",
             "my friend called the {topic} {adj} .", "the {topic} seemed {adj} to me .",
             "it is a {adj} {topic} , {adj2} in every way ."]
# Generated text pairs (task.synthetic_pairs=true): 3-way inference between two sentences.
PAIR_LABELS = ("entailment", "neutral", "contradiction")


def metric_key(name) -> str:
    """The ``f1_<name>`` key part of a class name (as the accuracy_f1 metric module writes it)."""
    return "_".join(str(name).replace("/", "_").split())


def sort_labels(values) -> list[str]:
    """Stable class order: integers (as strings) by value, then other strings alphabetically."""
    uniq = {str(v) for v in values}
    return sorted(uniq, key=lambda l: (0, int(l), "") if l.lstrip("-").isdigit() else (1, 0, l))


@dataclass
class Config(base.Config):
    max_length: int = MISSING            # sub-words per text (pair): longer inputs are truncated
    synthetic_pairs: bool = False        # generated data (debug=smoke, data=synthetic): text pairs, 3 classes


class ClassificationTask(Task):
    name = "classification"
    Config = Config
    archs = ("encoder",)
    auto_class = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    pipeline_tag = "text-classification"
    card_metric_type = "accuracy"
    columns = ("text", "label")
    optional_columns = ("text_pair",)
    head_names = ("pre_classifier", "classifier", "score")  # DistilBERT: pre_classifier + classifier; BERT /
    replaces_head = True                                    # RoBERTa: classifier; others: score
    length_keys = ("max_length",)
    input_fields = ("text", "text_pair")
    optional_input_fields = ("text_pair",)
    input_aliases = {"text": ("sentence", "sentence1", "premise"), "text_pair": ("sentence2", "hypothesis")}
    output_field = "prediction"

    # -- data --------------------------------------------------------------------------------------------------
    def synthetic_row(self, rng, split):
        if self.tcfg.get("synthetic_pairs"):
            return self._pair_row(rng, split)
        label = rng.choice(("positive", "negative"))
        words = POSITIVE if label == "positive" else NEGATIVE
        adj, adj2 = rng.sample(words, 2)
        text = rng.choice(gen.pool(TEMPLATES, split)).format(
            topic=rng.choice(TOPICS), adj=adj, adj2=adj2, place=rng.choice(gen.PLACE), day=rng.choice(gen.DAY))
        return {"text": text, "label": label}

    @staticmethod
    def _pair_row(rng, split):
        """Premise 'the ADJ ANIMAL VERB the THING .'; the hypothesis repeats it without the adjective (entailment),
        swaps the thing for another (neutral: the premise says nothing about it) or says the animal did not do it
        (contradiction). Test premises use held-out adjectives."""
        adj, animal, verb, thing = (rng.choice(gen.pool(gen.ADJ, split)), rng.choice(gen.ANIMAL),
                                    rng.choice(gen.VERB), rng.choice(gen.THING))
        label = rng.choice(PAIR_LABELS)
        if label == "entailment":
            hyp = f"the {animal} {verb} the {thing} ."
        elif label == "neutral":
            hyp = f"the {animal} {verb} the {rng.choice([t for t in gen.THING if t != thing])} ."
        else:
            hyp = f"the {animal} never {verb.removesuffix('es').removesuffix('s')} the {thing} ."
        return {"text": f"the {adj} {animal} {verb} the {thing} .", "text_pair": hyp, "label": label}

    def raw_rows(self, split, d):
        """Remember the class names of a ClassLabel label column (hub datasets; the data stage turns ids into these
        names): they fix the id order. A row without a label (id -1, e.g. GLUE's test splits) is an error."""
        col = dict(self.cfg.data.get("columns") or {}).get("label", "label")
        feature = d.features.get(col) if col in d.column_names else None
        if isinstance(feature, datasets.ClassLabel):
            missing = sum(1 for v in d[col] if v is None or v < 0)
            if missing:
                raise DataError(f"split '{split}' has {missing} rows without a label (class id -1: an unlabelled "
                                f"test split, as in GLUE); give a labelled split, e.g. data.test_file=... or a "
                                f"dataset whose test split has labels")
            self.class_names = list(feature.names)
        return d

    def clean(self, split, d):
        """Labels must be strings, integers or booleans (floats: regression is not supported); rows with an empty
        text (text pair) or no label are dropped and counted. Labels become their string form."""

        dtype = getattr(d.features["label"], "dtype", None)
        if dtype not in ("string", "large_string", "bool", "null") and not str(dtype).startswith(("int", "uint")):
            raise DataError(f"split '{split}' column 'label' holds {d.features['label']}; classification needs class "
                            f"labels (strings or integers), not floats or lists; set data.columns.label=<column>")
        texts = ["text"] + [c for c in self.optional_columns if c in d.column_names]

        def usable(row):
            return row["label"] is not None and str(row["label"]).strip() != "" and all(
                isinstance(row[c], str) and row[c].strip() for c in texts)

        d, dropped = drop_rows(d, texts + ["label"], usable, "empty text or no label")
        if dtype != "string":
            d = d.cast_column("label", datasets.Value("string"))
        return d, dropped

    def prepare(self, raw):
        names = getattr(self, "class_names", None)
        seen = {str(v) for v in raw["train"]["label"]}
        self.labels = list(names) if names else sort_labels(seen)
        if len(self.labels) < 2:
            raise DataError(f"the train split has {len(self.labels)} class ({self.labels}); classification needs at "
                            f"least 2")
        self.label2id = {l: i for i, l in enumerate(self.labels)}
        for split in ("validation", "test"):
            unknown = sorted({str(v) for v in raw[split]["label"]} - seen)
            if unknown:
                raise DataError(f"split '{split}' has labels not seen in train: {unknown[:5]}; the model can only "
                                f"predict training labels (train labels: {sorted(seen)[:12]})")
        metrics = {"loss", "accuracy", "macro_f1"} | {f"f1_{metric_key(l)}" for l in self.labels}
        if str(self.tcfg.metric) not in metrics:
            raise ConfigError(f"task.metric={self.tcfg.metric} is not a classification metric of this data; use "
                              f"one of {sorted(metrics)[:12]}")

    mixture_signature_name = "label set"

    def mixture_signature(self):
        return sorted(self.labels)

    def tokenizer_corpus(self, raw):
        pairs = raw["train"]["text_pair"] if "text_pair" in raw["train"].column_names else []
        return (t for texts in (raw["train"]["text"], pairs) for t in texts)

    def model_kwargs(self):
        return {"num_labels": len(self.labels), "id2label": dict(enumerate(self.labels)), "label2id": self.label2id,
                "problem_type": "single_label_classification"}

    def encode(self, tokenizer, batch: dict, max_length: int):
        pairs = batch.get("text_pair")
        return tokenizer(list(batch["text"]), list(pairs) if pairs is not None else None, truncation=True,
                         max_length=max_length)

    def preprocess(self, raw, tokenizer, model):
        label2id, max_len = self.label2id, int(self.tcfg.max_length)

        def encode(batch):
            enc = self.encode(tokenizer, batch, max_len)
            enc["labels"] = [label2id[str(l)] for l in batch["label"]]
            return enc

        return datasets.DatasetDict({
            split: d.map(encode, batched=True, remove_columns=d.column_names, num_proc=self.cfg.data.num_proc,
                         desc="tokenize")
            for split, d in raw.items()})

    # -- training ----------------------------------------------------------------------------------------------
    def collator(self, tokenizer, model):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def preprocess_logits_for_metrics(self):
        def argmax(logits, labels):
            return logits.argmax(dim=-1)

        return argmax

    def compute_metrics(self, tokenizer):
        metric, names = load_metric("accuracy_f1"), list(self.labels)

        def compute(eval_pred):
            return metric.compute(predictions=eval_pred.predictions.reshape(-1).tolist(),
                                  references=eval_pred.label_ids.reshape(-1).tolist(), label_names=names)

        return compute

    def samples(self, trainer, tokenizer, raw_split, tokenized_split, n):
        rows = [dict(r) for r in raw_split.select(range(min(n, len(raw_split))))]
        preds = self.predict(trainer.model.eval(), tokenizer, rows)
        return [{**{k: v for k, v in r.items() if k != "label"}, "gold": r["label"], "predicted": p["label"],
                 "score": p["score"]} for r, p in zip(rows, preds)]

    # -- inference ---------------------------------------------------------------------------------------------
    def predict(self, model, tokenizer, rows, batch_size=16, progress=False, generation=None, **options):
        """``{"label": name, "score": probability}`` per row (``text``, optional ``text_pair``)."""
        import torch

        limit = getattr(model.config, "max_position_embeddings", None) or int(self.tcfg.max_length)
        max_len = min(int(self.tcfg.max_length), int(limit))
        id2label = model.config.id2label
        out = []
        for chunk in batches(rows, batch_size, progress, self.name):
            pairs = [r.get("text_pair") for r in chunk]
            batch = {"text": [str(r["text"]) for r in chunk],
                     "text_pair": [str(p) for p in pairs] if any(p is not None for p in pairs) else None}
            if batch["text_pair"] is not None and any(p is None for p in pairs):
                raise DataError("some inputs have a text_pair and some do not; give one for every input")
            enc = self.encode(tokenizer, batch, max_len)
            enc = tokenizer.pad(enc, return_tensors="pt").to(model.device)
            with torch.no_grad():
                probs = model(**enc).logits.float().softmax(dim=-1)
            score, ids = probs.max(dim=-1)
            out.extend({"label": id2label[int(i)], "score": round(float(s), 4)} for i, s in zip(ids, score))
        return out


TASK_CLASS = ClassificationTask
