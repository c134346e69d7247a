"""The one evaluator of benchmarks/quality.py: every checkpoint of both sides (the pipeline, the plain script) is
scored by the same code on the same validation rows, whatever each side computed during training.

  NER             seqeval entity F1 on the first sub-word of each word (as run_ner and the pipeline)
  classification  accuracy (label names from the model's id2label against the row's label)
  qa              SQuAD F1 (0-1): windows of 384 tokens, stride 128 (run_qa's defaults), best span over the
                  windows of each question (pipeline/tasks/qa_spans.py, the run_qa post-processing), n-best 20,
                  answers up to 30 tokens
  seq2seq         token-weighted validation loss (the example scripts' eval metric): summarization source 512 /
                  target 128 tokens, translation 128 / 128 with T5's "translate English to German: " prefix
  causal LM       token-weighted validation loss: each validation document alone from position 0 (default), or
                  (--clm-eval blocks) the validation text joined and cut into blocks of 256 (run_clm's eval)
"""

from __future__ import annotations

from functools import partial
from pathlib import Path


def ner_f1(model_dir: Path, tokenizer, rows: list[dict]) -> float:
    import torch
    from seqeval.metrics import f1_score
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    id2label = model.config.id2label
    preds = []
    with torch.no_grad():
        for i in range(0, len(rows), 64):
            batch = rows[i:i + 64]
            enc = tokenizer([r["tokens"] for r in batch], is_split_into_words=True, truncation=True, max_length=512,
                            padding=True, return_tensors="pt")
            ids = model(**enc).logits.argmax(-1)
            for j, r in enumerate(batch):
                tags, seen = ["O"] * len(r["tokens"]), set()
                for pos, wid in enumerate(enc.word_ids(j)):
                    if wid is not None and wid not in seen:
                        seen.add(wid)
                        tags[wid] = id2label[int(ids[j, pos])]
                preds.append(tags)
    return float(f1_score([r["tags"] for r in rows], preds))


def seq2seq_loss(model_dir: Path, tokenizer, rows: list[dict], source="document", target="summary",
                 prefix="summarize: ", max_source=512, max_target=128) -> float:
    import torch
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    total = count = 0.0
    with torch.no_grad():
        for i in range(0, len(rows), 32):
            batch = rows[i:i + 32]
            enc = tokenizer([prefix + r[source] for r in batch], max_length=max_source, truncation=True, padding=True,
                            return_tensors="pt")
            labels = tokenizer(text_target=[r[target] for r in batch], max_length=max_target, truncation=True,
                               padding=True, return_tensors="pt")["input_ids"]
            labels[labels == tokenizer.pad_token_id] = -100
            logits = model(**enc, labels=labels).logits
            total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum"))
            count += int((labels != -100).sum())
    return total / count


def clm_loss(model_dir: Path, tokenizer, rows: list[dict], block=256, mode="documents") -> float:
    """Token-weighted loss of next-token prediction. ``documents``: every row alone from position 0 (cut at
    ``block``), how a model is prompted; ``blocks``: the rows joined with EOS and cut into full blocks, run_clm's
    eval, which favours a model trained on such blocks over one trained on packed documents whose positions restart
    per document (the pipeline's packing): it never saw a document continue past position ~100."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = [x + [tokenizer.eos_token_id] for x in tokenizer([r["text"] for r in rows], add_special_tokens=False)["input_ids"]]
    if mode == "blocks":
        flat = [t for x in ids for t in x]  # run_clm's join-and-cut: full blocks, the remainder dropped
        ids = [flat[i:i + block] for i in range(0, len(flat) // block * block, block)]
    else:
        ids = sorted((x[:block] for x in ids), key=len)  # similar lengths per batch: little padding
    total = count = 0.0
    with torch.no_grad():
        for i in range(0, len(ids), 16):
            batch = ids[i:i + 16]
            width = max(len(x) for x in batch)
            x = torch.tensor([row + [0] * (width - len(row)) for row in batch])
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch])
            logits = model(input_ids=x, attention_mask=mask).logits[:, :-1]
            labels = x[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum"))
            count += int((labels != -100).sum())
    return total / count


def classification_accuracy(model_dir: Path, tokenizer, rows: list[dict]) -> float:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(rows), 64):
            batch = rows[i:i + 64]
            enc = tokenizer([r["text"] for r in batch], truncation=True, max_length=128, padding=True,
                            return_tensors="pt")
            ids = model(**enc).logits.argmax(-1)
            right += sum(model.config.id2label[int(k)] == str(r["label"]) for k, r in zip(ids, batch))
    return right / len(rows)


def qa_f1(model_dir: Path, tokenizer, rows: list[dict], max_length=384, stride=128) -> float:
    import torch
    from transformers import AutoModelForQuestionAnswering

    from pipeline.tasks.qa_common import squad_scores
    from pipeline.tasks.qa_spans import best_spans, windows

    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    contexts = [r["context"] for r in rows]
    feats = windows(tokenizer, [r["question"] for r in rows], contexts, max_length, stride)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in feats]
    starts, ends = [], []
    with torch.no_grad():
        for i in range(0, len(feats["input_ids"]), 32):
            enc = tokenizer.pad({k: feats[k][i:i + 32] for k in keys}, return_tensors="pt")
            out = model(**enc)
            starts += [row.tolist() for row in out.start_logits]
            ends += [row.tolist() for row in out.end_logits]
    answers = best_spans(contexts, feats["example_id"], feats["offset_mapping"], starts, ends, 20, 30)
    return float(squad_scores([a["answer"] for a in answers], [r["answers"]["text"] for r in rows])["f1"])


SCORERS = {
    "ner": ner_f1,
    "classification": classification_accuracy,
    "qa": qa_f1,
    "summarization": seq2seq_loss,
    "translation": partial(seq2seq_loss, source="en", target="de", prefix="translate English to German: ",
                           max_source=128, max_target=128),
    "generation": clm_loss,
}


def scorer(task: str, clm_eval: str = "documents"):
    """``(model_dir, tokenizer, rows) -> metric`` of ``task``; ``clm_eval``: the causal-LM loss mode (clm_loss)."""
    return partial(clm_loss, mode=clm_eval) if task == "generation" else SCORERS[task]
