"""Named-entity recognition: token classification with word-level IOB2 tags aligned to sub-words."""

from __future__ import annotations

from pipeline.errors import DataError
from pipeline.tasks.base import Task


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


class NerTask(Task):
    name = "ner"
    auto_class = "AutoModelForTokenClassification"
    columns = ("tokens", "tags")

    def prepare(self, raw):
        self.labels = sort_labels(t for row in raw["train"]["tags"] for t in row)
        self.label2id = {l: i for i, l in enumerate(self.labels)}
        for split in ("validation", "test"):
            unknown = sorted({t for row in raw[split]["tags"] for t in row} - set(self.labels))
            if unknown:
                raise DataError(f"split '{split}' has tags not seen in train: {unknown[:5]}; the model can only "
                                f"predict training labels (train labels: {self.labels[:12]})")

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
        from pipeline.metrics import load_metric

        seqeval = load_metric("seqeval")

        def compute(eval_pred):
            preds, refs = self.decode(eval_pred.predictions, eval_pred.label_ids)
            return flatten_seqeval(seqeval.compute(predictions=preds, references=refs))

        return compute

    def samples(self, trainer, tokenizer, raw_split, tokenized_split, n):
        out = trainer.predict(tokenized_split.select(range(min(n, len(tokenized_split)))), metric_key_prefix="s")
        preds, refs = self.decode(out.predictions, out.label_ids)
        return [{"tokens": raw_split[i]["tokens"], "gold": refs[i], "predicted": preds[i]} for i in range(len(preds))]


def flatten_seqeval(result: dict) -> dict:
    flat = {k.replace("overall_", ""): v for k, v in result.items() if k.startswith("overall_")}
    for etype, scores in result.items():
        if isinstance(scores, dict):
            flat.update({f"{etype}_{k}": v for k, v in scores.items() if k in ("f1", "number")})
    return flat


TASK_CLASS = NerTask
