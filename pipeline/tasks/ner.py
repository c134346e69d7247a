"""Named-entity recognition (and any word tagging): token classification with word-level tags aligned to sub-words.

The training split's tags say their scheme (``tag_scheme``): IOB2 (entities start with B-), IOB1 (an entity starts
with I-; B- only splits two adjacent entities of one type: converted to IOB2, counted), BIOES (E- / S- tags), or plain
tags (part of speech, chunks, anything without an entity prefix). Entity schemes are scored with seqeval (entity
precision / recall / F1); plain tags with token accuracy and macro-F1 over the tags (``f1`` is that macro-F1).
metrics.json says which (``tag_scheme``, ``tags_converted``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

from omegaconf import MISSING

from pipeline.data import synthetic as gen
from pipeline.data.checks import drop_rows, string_lists
from pipeline.errors import DataError
from pipeline.metrics import load_metric
from pipeline.tasks import base
from pipeline.tasks.base import Task, batches

TEMPLATES = [  # the last 30% (pool()) are held out: test sentences have shapes training never shows
    "{PER} visited {LOC} on Monday .", "{ORG} hired {PER} as chief executive .",
    "The {MISC} delegation met {PER} in {LOC} .", "{PER} said {ORG} would open an office in {LOC} .",
    "Shares of {ORG} fell 3 percent in {LOC} trading .", "{PER} won the {MISC} title after beating {PER} .",
    "Officials in {LOC} confirmed that {ORG} had signed the deal .", "{PER} , a spokesman for {ORG} , declined to comment .",
    "Police in {LOC} arrested two men on Tuesday .", "The {MISC} team arrived in {LOC} late on Sunday .",
    "{ORG} and {ORG} agreed to merge , {PER} told reporters .", "Rain stopped play in {LOC} .",
    "{PER} will fly to {LOC} next week to meet {PER} .", "Nothing else happened on the day .",
    "The results were published by {ORG} in {LOC} .", "It was the first {MISC} victory for {PER} since 1998 .",
    "In {LOC} , {PER} told the {MISC} press that {ORG} was ready .", "{ORG} fined {PER} for a breach of rules .",
    "Fans in {LOC} celebrated the {MISC} win late into the night .", "{PER} left {ORG} after ten years .",
]


ENTITY_PREFIXES = ("B-", "I-", "E-", "S-")
SCHEMES = ("IOB2", "IOB1", "BIOES", "plain")


def _starts_with_inside(prev: str, tag: str) -> bool:
    """An I-X tag that begins an entity: after O, at the sentence start (prev "O") or after another type."""
    return tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:])


def tag_scheme(sequences) -> str:
    """The scheme of a split's tag sequences: IOB2 | IOB1 | BIOES | plain (see the module docstring)."""
    sequences = list(sequences)
    tags = {t for row in sequences for t in row}
    if tags <= {"O"} or not all(t == "O" or (t[:2] in ENTITY_PREFIXES and len(t) > 2) for t in tags):
        return "plain"
    if any(t[:2] in ("E-", "S-") for t in tags):
        return "BIOES"
    for row in sequences:
        prev = "O"
        for t in row:
            if _starts_with_inside(prev, t):
                return "IOB1"
            prev = t
    return "IOB2"


def iob1_to_iob2(tags: list[str]) -> tuple[list[str], int]:
    """(IOB2 tags, how many were changed): an I-X that begins an entity becomes B-X."""
    out, prev, changed = [], "O", 0
    for t in tags:
        if _starts_with_inside(prev, t):
            t, changed = "B-" + t[2:], changed + 1
        out.append(t)
        prev = t
    return out, changed


def sort_labels(tags) -> list[str]:
    """'O' first, then by entity type with B- before I-: a stable, readable id order."""
    uniq = set(tags)
    rest = sorted(uniq - {"O"}, key=lambda t: (t[2:] if t[:2] in ("B-", "I-", "E-", "S-") else t, t))
    return (["O"] if "O" in uniq else []) + rest


def align_labels(word_ids, word_labels, label_all_tokens=False, b_to_i=None) -> list[int]:
    """Sub-word labels from word labels. Special tokens -> -100; the first sub-word of a word gets the word's
    label; later sub-words get -100, or with ``label_all_tokens`` the word's label (B-X turned into I-X)."""
    out, prev = [], None
    for wid in word_ids:
        if wid is None:
            out.append(-100)
        elif wid != prev:
            out.append(word_labels[wid])
        else:
            lab = word_labels[wid]
            out.append((b_to_i or {}).get(lab, lab) if label_all_tokens else -100)
        prev = wid
    return out


@dataclass
class Config(base.Config):
    max_length: int = MISSING
    label_all_tokens: bool = MISSING


class NerTask(Task):
    name = "ner"
    Config = Config
    archs = ("encoder",)
    auto_class = "AutoModelForTokenClassification"
    peft_task_type = "TOKEN_CLS"
    pipeline_tag = "token-classification"
    card_metric_type = "seqeval"
    columns = ("tokens", "tags")
    text_file_format = "conll"
    head_names = ("classifier", "score")
    replaces_head = True
    pretokenized = True
    length_keys = ("max_length",)
    input_fields = ("text",)
    input_aliases = {"text": ("sentence", "tokens")}
    output_field = "entities"
    cli_options = {"aggregation": dict(default="first", choices=["first", "simple", "average", "max"],
                                       help="how sub-word predictions become word labels (default first: a word "
                                            "takes its first sub-word's label, the one trained on)")}
    virtual_token_note = "labels left-padded"

    # -- data --------------------------------------------------------------------------------------------------
    def synthetic_row(self, rng, split):
        tokens, tags = [], []
        pools = {"ORG": gen.ORG, "LOC": gen.LOC, "MISC": gen.MISC}
        for word in rng.choice(gen.pool(TEMPLATES, split)).split():
            if word.startswith("{") and word.endswith("}"):
                kind = word[1:-1]
                words = (gen.name(rng, split) if kind == "PER" else rng.choice(gen.pool(pools[kind], split))).split()
                tokens += words
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
            else:
                tokens.append(word)
                tags.append("O")
        return {"tokens": tokens, "tags": tags}

    def clean(self, split, d):
        """Words and tags must be lists of strings of equal length (an error naming the row otherwise); rows with a
        missing (null) word or tag and empty sentences are dropped and counted."""
        string_lists(d, split, self.columns)
        d, missing = drop_rows(d, self.columns, lambda row: all(row[c] is not None and None not in row[c]
                                                                 for c in self.columns), "missing tokens or tags")
        bad = [i for i, (t, g) in enumerate(zip(d["tokens"], d["tags"])) if len(t) != len(g)]
        if bad:
            raise DataError(f"split '{split}' row {bad[0]}: {len(d[bad[0]]['tokens'])} tokens but "
                            f"{len(d[bad[0]]['tags'])} tags ({len(bad)} rows like this); every token needs "
                            f"exactly one tag")
        d, empty = drop_rows(d, ("tokens",), lambda row: len(row["tokens"]) > 0, "empty sentence")
        return d, {**missing, **empty}

    def prepare(self, raw):
        """The tag scheme of the training split (IOB1 converted to IOB2 in every split, counted), then the label
        set; validation and test tags must be training tags."""
        self.scheme, self.converted = tag_scheme(raw["train"]["tags"]), 0
        if self.scheme == "IOB1":
            for split in list(raw):
                counts = []

                def convert(batch, counts=counts):
                    rows = [iob1_to_iob2(tags) for tags in batch["tags"]]
                    counts.extend(n for _, n in rows)
                    return {"tags": [tags for tags, _ in rows]}

                raw[split] = raw[split].map(convert, batched=True, desc="tags: IOB1 -> IOB2")
                self.converted += sum(counts)
        shown = "IOB1, converted to IOB2" if self.scheme == "IOB1" else self.scheme
        how = "token accuracy + macro-F1 over the tags" if self.scheme == "plain" else "seqeval entity F1"
        logging.getLogger("pipeline").info("ner: tag scheme %s (%d tags changed); scored with %s", shown,
                                           self.converted, how)
        self.labels = sort_labels(t for row in raw["train"]["tags"] for t in row)
        self.label2id = {l: i for i, l in enumerate(self.labels)}
        for split in ("validation", "test"):
            unknown = sorted({t for row in raw[split]["tags"] for t in row} - set(self.labels))
            if unknown:
                raise DataError(f"split '{split}' has tags not seen in train: {unknown[:5]}; the model can only "
                                f"predict training labels (train labels: {self.labels[:12]})")

    mixture_signature_name = "tag set"

    def mixture_signature(self):
        return list(self.labels)

    def data_facts(self):
        return {"tag_scheme": self.scheme, "tags_converted": self.converted}

    def tokenizer_corpus(self, raw):
        return (" ".join(toks) for toks in raw["train"]["tokens"])

    def model_kwargs(self):
        return {"num_labels": len(self.labels), "id2label": dict(enumerate(self.labels)), "label2id": self.label2id}

    def preprocess(self, raw, tokenizer, model):
        label2id, max_len, all_tok = self.label2id, self.tcfg.max_length, self.tcfg.label_all_tokens
        b_to_i = {label2id[l]: label2id.get("I-" + l[2:], label2id[l]) for l in self.labels if l.startswith("B-")}

        def encode(batch):
            enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_len)
            enc["labels"] = [align_labels(enc.word_ids(i), [label2id[t] for t in tags], all_tok, b_to_i)
                             for i, tags in enumerate(batch["tags"])]
            enc[f"{base.CUT}max_length"] = base.cut_flags(enc)  # counted (cut_counts): words past the limit
            return enc

        return raw.map(encode, batched=True, remove_columns=list(self.columns), num_proc=self.cfg.data.num_proc,
                       desc="tokenize + align labels")

    def collator(self, tokenizer, model):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=None)

    def preprocess_logits_for_metrics(self):
        def argmax(logits, labels):
            return logits.argmax(dim=-1)  # keep only ids: eval memory O(tokens), not O(tokens x labels)

        return argmax

    def decode(self, pred_ids, label_ids):
        """Drop -100 positions and map ids to tag names: (predictions, references) as lists of tag lists."""
        preds, refs = [], []
        for p_row, l_row in zip(pred_ids, label_ids):
            keep = [(p, l) for p, l in zip(p_row, l_row) if l != -100]
            preds.append([self.labels[p] for p, _ in keep])
            refs.append([self.labels[l] for _, l in keep])
        return preds, refs

    def compute_metrics(self, tokenizer):
        if getattr(self, "scheme", "IOB2") == "plain":
            return self._plain_tag_metrics()
        seqeval = load_metric("seqeval")

        def compute(eval_pred):
            preds, refs = self.decode(eval_pred.predictions, eval_pred.label_ids)
            return flatten_seqeval(seqeval.compute(predictions=preds, references=refs))

        return compute

    def _plain_tag_metrics(self):
        """Tags that name no entities: every word's tag is scored, token accuracy and macro-F1 (``f1`` too, so the
        default task.metric selects by it), F1 per tag."""
        metric, names = load_metric("accuracy_f1"), list(self.labels)

        def compute(eval_pred):
            preds, refs = self.decode(eval_pred.predictions, eval_pred.label_ids)
            ids = {t: i for i, t in enumerate(names)}
            out = metric.compute(predictions=[ids[t] for row in preds for t in row],
                                 references=[ids[t] for row in refs for t in row], label_names=names)
            return {"f1": out["macro_f1"], **out}

        return compute

    def virtual_tokens(self, collator, num_virtual_tokens):
        return LeftPadLabels(collator, num_virtual_tokens)

    def samples(self, trainer, tokenizer, raw_split, tokenized_split, n):
        out = trainer.predict(tokenized_split.select(range(min(n, len(tokenized_split)))), metric_key_prefix="s")
        preds, refs = self.decode(out.predictions, out.label_ids)
        return [{"tokens": raw_split[i]["tokens"], "gold": refs[i], "predicted": preds[i]} for i in range(len(preds))]

    # -- inference ---------------------------------------------------------------------------------------------
    def predict(self, model, tokenizer, rows, batch_size=16, progress=False, generation=None, aggregation="first",
                **options):
        """Entity spans per text: ``{"entity", "word", "start", "end", "score"}`` with ``text[start:end] == word``.
        Sub-word predictions are aggregated by the token-classification pipeline (``first``: a word takes the label
        of its first sub-word, the one trained on); long texts are read in overlapping windows."""
        from transformers import pipeline

        texts = [" ".join(r["text"]) if isinstance(r["text"], list) else str(r["text"]) for r in rows]
        limit = getattr(model.config, "max_position_embeddings", None) or int(self.tcfg.max_length)
        tokenizer.model_max_length = min(int(self.tcfg.max_length), int(limit))
        nlp = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy=aggregation,
                       device=model.device, stride=tokenizer.model_max_length // 4)
        out = []
        with warnings.catch_warnings():  # byte-level BPE has no "##" marks: the pipeline says it uses a heuristic
            warnings.filterwarnings("ignore", message="Tokenizer does not support real words")
            for chunk in batches(texts, batch_size, progress, self.name):
                for text, ents in zip(chunk, nlp(chunk, batch_size=batch_size)):
                    out.append([{"entity": e["entity_group"], "word": text[e["start"]:e["end"]],
                                 "start": int(e["start"]), "end": int(e["end"]), "score": round(float(e["score"]), 4)}
                                for e in ents])
        return out


class LeftPadLabels:
    """Prompt tuning / P-tuning put ``n`` virtual tokens before the input; token-classification logits then have
    ``n`` more positions than the labels. Left-pad the labels with -100 (ignored by loss and metrics)."""

    def __init__(self, collator, num_virtual_tokens: int):
        self.collator, self.n = collator, int(num_virtual_tokens)

    def __call__(self, features):
        import torch

        batch = self.collator(features)
        if "labels" in batch:
            labels = batch["labels"]
            batch["labels"] = torch.cat([labels.new_full((labels.shape[0], self.n), -100), labels], dim=1)
        return batch


def flatten_seqeval(result: dict) -> dict:
    flat = {k.replace("overall_", ""): v for k, v in result.items() if k.startswith("overall_")}
    for etype, scores in result.items():
        if isinstance(scores, dict):
            flat.update({f"{etype}_{k}": v for k, v in scores.items() if k in ("f1", "number")})
    return flat


TASK_CLASS = NerTask
