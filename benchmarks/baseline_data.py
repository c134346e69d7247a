"""The baseline scripts' data and model per task (benchmarks/baseline_trainer.py --task): each function is the
preprocessing of the transformers example script users run for that task (run_ner, run_summarization /
run_translation, run_glue, run_qa, run_clm), returning (model, tokenised train split, data collator)."""

from __future__ import annotations

import os
import time

TIMES = {}  # "tokenize": seconds of the train split's map
TEST = {}  # classification --eval_test: the tokenised test split


def timed_map(ds, fn, **kwargs):
    t = time.time()
    out = ds.map(fn, batched=True, remove_columns=ds.column_names, **kwargs)
    TIMES["tokenize"] = time.time() - t
    return out


def read_conll(path):
    """CoNLL-2003 column file -> {"tokens": [...], "tags": [...]} rows (token first column, NER tag last)."""
    rows, tokens, tags = [], [], []
    for line in open(path, encoding="utf-8"):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if tokens:
                rows.append({"tokens": tokens, "tags": tags})
            tokens, tags = [], []
            continue
        tokens.append(parts[0])
        tags.append(parts[-1])
    if tokens:
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def ner(args, tokenizer):
    import datasets
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, default_data_collator

    raw = datasets.Dataset.from_list(read_conll(os.path.join(args.data_dir, "train.txt")))
    if args.max_train_samples:
        raw = raw.select(range(min(args.max_train_samples, len(raw))))
    labels = sorted({t for row in raw["tags"] for t in row})
    label2id = {l: i for i, l in enumerate(labels)}
    pad = "max_length" if args.padding == "max_length" else False

    def encode(batch):
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=args.max_length or None,
                        padding=pad)
        enc["labels"] = []
        for i, tags in enumerate(batch["tags"]):
            prev, row = None, []
            for wid in enc.word_ids(i):
                row.append(-100 if wid is None or wid == prev else label2id[tags[wid]])
                prev = wid
            enc["labels"].append(row)
        return enc

    train = timed_map(raw, encode)
    model = AutoModelForTokenClassification.from_pretrained(
        args.model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id,
        ignore_mismatched_sizes=True, attn_implementation="sdpa")
    collator = default_data_collator if pad else DataCollatorForTokenClassification(tokenizer)
    return model, train, collator


def seq2seq(args, tokenizer):
    """Summarization (DialogSum JSONL {document, summary}) or translation (Multi30k JSONL {en, de}; run_translation's
    --source_lang / --target_lang), the run_summarization / run_translation way (DataCollatorForSeq2Seq)."""
    import datasets
    from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, default_data_collator

    raw = datasets.load_dataset("json", data_files={"train": os.path.join(args.data_dir, "train.jsonl")})["train"]
    if args.max_train_samples:
        raw = raw.select(range(min(args.max_train_samples, len(raw))))
    pad = "max_length" if args.padding == "max_length" else False
    source, target = ("document", "summary") if args.task == "summarization" else (args.source_lang, args.target_lang)

    def encode(batch):
        enc = tokenizer([args.source_prefix + d for d in batch[source]], max_length=args.max_source_length,
                        truncation=True, padding=pad)
        labels = tokenizer(text_target=batch[target], max_length=args.max_target_length, truncation=True,
                           padding=pad)["input_ids"]
        if pad:  # as the examples' ignore_pad_token_for_loss: padded label positions do not count in the loss
            labels = [[t if t != tokenizer.pad_token_id else -100 for t in row] for row in labels]
        enc["labels"] = labels
        return enc

    train = timed_map(raw, encode)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model_dir, attn_implementation="sdpa")
    collator = default_data_collator if pad else DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    return model, train, collator


def classification(args, tokenizer):
    """SST-2 style JSONL {text, label}: string labels sorted, the run_glue way (DataCollatorWithPadding)."""
    import datasets
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, default_data_collator

    files = {s: os.path.join(args.data_dir, f"{s}.jsonl") for s in ("train", "test")}
    raw = datasets.load_dataset("json", data_files=files)
    if args.max_train_samples:
        raw["train"] = raw["train"].select(range(min(args.max_train_samples, len(raw["train"]))))
    labels = sorted(set(raw["train"]["label"]))
    label2id = {l: i for i, l in enumerate(labels)}
    pad = "max_length" if args.padding == "max_length" else False

    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=args.max_length, padding=pad)
        enc["labels"] = [label2id[l] for l in batch["label"]]
        return enc

    train = timed_map(raw["train"], encode)
    TEST["dataset"] = raw["test"].map(encode, batched=True, remove_columns=raw["test"].column_names)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id,
        attn_implementation="sdpa")
    collator = default_data_collator if pad else DataCollatorWithPadding(tokenizer)
    return model, train, collator


def qa(args, tokenizer):
    """Extractive QA (SQuAD JSONL): run_qa's prepare_train_features (question + context windows of --max_length
    tokens overlapping by --doc_stride, answer start / end tokens, CLS for a window without the answer; the same
    algorithm as pipeline/tasks/qa_spans.py, which is what is called); run_qa pads to max_length by default."""
    import datasets
    from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding, default_data_collator

    from pipeline.tasks.qa_spans import windows

    raw = datasets.load_dataset("json", data_files={"train": os.path.join(args.data_dir, "train.jsonl")})["train"]
    if args.max_train_samples:
        raw = raw.select(range(min(args.max_train_samples, len(raw))))
    pad = args.padding == "max_length"

    def encode(batch):
        feats = windows(tokenizer, batch["question"], batch["context"], args.max_length, args.doc_stride,
                        answers=batch["answers"])
        feats = {k: v for k, v in feats.items() if k not in ("offset_mapping", "example_id", "question_cut")}
        if pad:
            feats.update(tokenizer.pad({k: feats[k] for k in ("input_ids", "attention_mask", "token_type_ids")
                                        if k in feats}, padding="max_length", max_length=args.max_length))
        return feats

    train = timed_map(raw, encode)
    model = AutoModelForQuestionAnswering.from_pretrained(args.model_dir, attn_implementation="sdpa")
    return model, train, default_data_collator if pad else DataCollatorWithPadding(tokenizer)


def generation(args, tokenizer):
    import datasets
    from transformers import AutoModelForCausalLM, default_data_collator

    if args.train_file:
        raw = datasets.load_dataset("json", data_files={"train": args.train_file})["train"]
    else:
        raw = datasets.load_dataset("text", data_files={"train": os.path.join(args.data_dir, "input.txt")},
                                    sample_by="paragraph")["train"]
    raw = raw.filter(lambda b: [bool(t.strip()) for t in b["text"]], batched=True)
    if args.max_train_samples:
        raw = raw.select(range(min(args.max_train_samples, len(raw))))
    eos, block = tokenizer.eos_token_id, args.block_size
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def padded(batch):  # naive: one example per paragraph, padded to the block size, pad positions masked
        enc = tokenizer([t for t in batch["text"]], max_length=block, truncation=True, padding="max_length")
        enc["labels"] = [[t if m else -100 for t, m in zip(ids, mask)]
                         for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
        return enc

    def packed(batch):  # run_clm: tokenize, concatenate with EOS, cut into full blocks
        ids = [x + [eos] for x in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]]
        flat = [t for x in ids for t in x]
        n = len(flat) // block * block
        blocks = [flat[i:i + block] for i in range(0, n, block)]
        return {"input_ids": blocks, "attention_mask": [[1] * block for _ in blocks], "labels": [list(b) for b in blocks]}

    fn = padded if args.padding == "max_length" else packed
    train = timed_map(raw, fn, batch_size=1000)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, attn_implementation="sdpa")
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, train, default_data_collator


BUILDERS = {"ner": ner, "summarization": seq2seq, "translation": seq2seq, "classification": classification, "qa": qa,
            "generation": generation}
