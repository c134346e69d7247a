"""A plain transformers Trainer script (the style of the transformers examples run_ner / run_summarization /
run_clm), the baseline the pipeline is measured against by benchmarks/run.py and benchmarks/quality.py.

  --padding max_length   naive: every example padded to the maximum length in preprocessing, default_data_collator,
                         random sampler (the examples' --pad_to_max_length path); causal LM: one padded example per
                         paragraph instead of packed blocks
  --padding dynamic      dynamic padding per batch (the collators); causal LM: packed full blocks
  --sampling             group_by_length (the pipeline's: similar lengths per batch) or random (the examples')
  --group_order          with group_by_length: sorted (transformers' order) or shuffled (the pipeline's default,
                         pipeline/sampling.py), seeded by (seed, epoch) as in the pipeline (pipeline.guards.
                         EpochSeededOrder), so both sides train on the same batches

benchmarks/tasks.py holds the flags of each variant (the pipeline's settings; the example scripts' defaults). Tokens
are counted by the same forward pre-hook as the pipeline (pipeline/throughput.py), so both sides report the same
figures computed the same way. Writes one JSON file (--out) with the Trainer's train metrics + those counts + the
log history (with training seconds per row; checkpoints for time-to-quality with --save_steps).

  python benchmarks/baseline_trainer.py --task ner --model_dir <dir> --data_dir ../shared/data/conll2003 --out r.json

Classification (SST-2 JSONL {text, label}): --max_steps -1 --epochs N trains whole epochs and --eval_test scores
test.jsonl (accuracy) at the end, the plain-script reference of recipe=minilm-sst2:

  python benchmarks/baseline_trainer.py --task classification --model_dir <minilm dir> --data_dir ../shared/data/sst2 \
      --max_steps -1 --epochs 2 --batch_size 32 --learning_rate 5e-5 --sampling random --eval_test --out sst2.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

T_START = time.time()
ROOT = Path(__file__).resolve().parent.parent
TIMES = {}
TEST = {}  # classification --eval_test: the tokenised test split


def timed_map(ds, fn, **kwargs):
    t = time.time()
    out = ds.map(fn, batched=True, remove_columns=ds.column_names, **kwargs)
    TIMES["tokenize"] = time.time() - t
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["ner", "summarization", "generation", "classification"], required=True)
    p.add_argument("--model_dir", required=True, help="local model + tokenizer directory")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--padding", choices=["max_length", "dynamic"], default="dynamic")
    p.add_argument("--sampling", choices=["group_by_length", "random"], default=None,
                   help="default: group_by_length with dynamic padding (NER, summarization), else random")
    p.add_argument("--group_order", choices=["sorted", "shuffled"], default="sorted")
    p.add_argument("--max_train_samples", type=int, default=None)
    p.add_argument("--train_file", default=None, help="generation: a JSONL file of {text} rows instead of input.txt")
    p.add_argument("--max_steps", type=int, default=20, help="-1: --epochs")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--eval_test", action="store_true", help="classification: accuracy on test.jsonl at the end")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=5e-5)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--warmup", type=float, default=0.1, help="warmup_steps (< 1: a fraction of the steps)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (use_cpu on a CPU)")
    p.add_argument("--save_steps", type=int, default=0, help="> 0: model-only checkpoints every N steps")
    p.add_argument("--logging_steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_length", type=int, default=128, help="NER; 0: the tokenizer's maximum (run_ner's default)")
    p.add_argument("--max_source_length", type=int, default=512)
    p.add_argument("--max_target_length", type=int, default=128)
    p.add_argument("--source_prefix", default="")
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    return p.parse_args(argv)


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


def summarization(args, tokenizer):
    import datasets
    from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, default_data_collator

    raw = datasets.load_dataset("json", data_files={"train": os.path.join(args.data_dir, "train.jsonl")})["train"]
    if args.max_train_samples:
        raw = raw.select(range(min(args.max_train_samples, len(raw))))
    pad = "max_length" if args.padding == "max_length" else False

    def encode(batch):
        enc = tokenizer([args.source_prefix + d for d in batch["document"]], max_length=args.max_source_length,
                        truncation=True, padding=pad)
        labels = tokenizer(text_target=batch["summary"], max_length=args.max_target_length, truncation=True,
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


def main(argv=None):
    args = parse_args(argv)
    import torch
    import transformers
    from transformers import AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model, train, collator = {"ner": ner, "summarization": summarization, "generation": generation,
                              "classification": classification}[args.task](args, tokenizer)
    seq2seq = args.task == "summarization"
    args_class = transformers.Seq2SeqTrainingArguments if seq2seq else transformers.TrainingArguments
    trainer_class = transformers.Seq2SeqTrainer if seq2seq else transformers.Trainer
    out_dir = Path(args.out).with_suffix("")
    sampling = args.sampling or ("group_by_length" if args.padding == "dynamic" and args.task != "generation"
                                 else "random")
    saving = dict(save_strategy="steps", save_steps=args.save_steps, save_only_model=True) if args.save_steps else \
        dict(save_strategy="no")
    training_args = args_class(
        output_dir=str(out_dir / "checkpoints"), max_steps=args.max_steps, num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
        warmup_steps=args.warmup, lr_scheduler_type="linear", seed=args.seed, logging_steps=args.logging_steps,
        report_to="none", eval_strategy="no", disable_tqdm=True, dataloader_pin_memory=False,
        logging_nan_inf_filter=False, train_sampling_strategy=sampling, bf16=args.bf16,
        use_cpu=args.bf16 and not torch.cuda.is_available(), **saving)
    sys.path.insert(0, str(ROOT))
    from pipeline import throughput  # the same token counter as the pipeline: same figures, same way
    from pipeline.sampling import with_group_order  # the pipeline's batch order (shuffled length groups)

    trainer_class = with_group_order(trainer_class, args.group_order)
    trainer = trainer_class(model=model, args=training_args, train_dataset=train, data_collator=collator,
                            processing_class=tokenizer)

    throughput.attach(trainer)
    if training_args.train_sampling_strategy == "group_by_length":
        from pipeline.guards import EpochSeededOrder  # the pipeline's batch order: length groups seeded by (seed, epoch)

        trainer.add_callback(EpochSeededOrder())
    metrics = dict(trainer.train().metrics)
    metrics.update(throughput.facts(trainer))
    if args.eval_test and TEST:
        import numpy as np

        out = trainer.predict(TEST["dataset"])
        metrics["test_accuracy"] = float((np.argmax(out.predictions, axis=-1) == out.label_ids).mean())
    trainer.save_model(str(out_dir / "model"))
    import resource

    metrics.update(tokenize_seconds=TIMES["tokenize"], wall_seconds=time.time() - T_START,
                   peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   torch_threads=torch.get_num_threads(), train_samples=len(train), global_step=trainer.state.global_step,
                   log_history=trainer.state.log_history)
    Path(args.out).write_text(json.dumps(metrics, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
