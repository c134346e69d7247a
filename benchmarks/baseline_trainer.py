"""A plain transformers Trainer script (the style of the transformers examples run_ner / run_summarization /
run_translation / run_glue / run_qa / run_clm), the baseline the pipeline is measured against by benchmarks/run.py
and benchmarks/quality.py. Each task's preprocessing is in benchmarks/baseline_data.py.

  --padding max_length   naive: every example padded to the maximum length in preprocessing, default_data_collator,
                         random sampler (the examples' --pad_to_max_length path); causal LM: one padded example per
                         paragraph instead of packed blocks
  --padding dynamic      dynamic padding per batch (the collators); causal LM: packed full blocks
  --sampling             group_by_length (the pipeline's: similar lengths per batch) or random (the examples')
  --group_order          with group_by_length: sorted (transformers' order) or shuffled (the pipeline's default,
                         pipeline/training/sampling.py), seeded by (seed, epoch) as in the pipeline (pipeline.guards.
                         EpochSeededOrder), so both sides train on the same batches

benchmarks/tasks.py holds the flags of each variant (the pipeline's settings; the example scripts' defaults). Tokens
are counted by the same forward pre-hook as the pipeline (pipeline/training/throughput.py), so both sides report the same
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
import sys
import time
from pathlib import Path

T_START = time.time()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # pipeline: the shared token meter, sampling order and QA windows
sys.path.insert(0, str(ROOT / "benchmarks"))

from baseline_data import BUILDERS, TEST, TIMES  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=sorted(BUILDERS), required=True)
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
    p.add_argument("--max_length", type=int, default=128,
                   help="NER, classification, QA windows; 0: the tokenizer's maximum (run_ner's default)")
    p.add_argument("--doc_stride", type=int, default=128, help="QA: window overlap (run_qa's default)")
    p.add_argument("--source_lang", default="en", help="translation: row key of the source text")
    p.add_argument("--target_lang", default="de", help="translation: row key of the target text")
    p.add_argument("--max_source_length", type=int, default=512)
    p.add_argument("--max_target_length", type=int, default=128)
    p.add_argument("--source_prefix", default="")
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch
    import transformers
    from transformers import AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model, train, collator = BUILDERS[args.task](args, tokenizer)
    seq2seq = args.task in ("summarization", "translation")
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
    from pipeline.training import throughput  # the same token counter as the pipeline: same figures, same way
    from pipeline.training.sampling import with_group_order  # the pipeline's batch order (shuffled length groups)

    trainer_class = with_group_order(trainer_class, args.group_order)
    trainer = trainer_class(model=model, args=training_args, train_dataset=train, data_collator=collator,
                            processing_class=tokenizer)

    throughput.attach(trainer)
    if training_args.train_sampling_strategy == "group_by_length":
        from pipeline.training.guards import EpochSeededOrder  # the pipeline's batch order: length groups seeded by (seed, epoch)

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
