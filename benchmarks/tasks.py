"""The benchmark tasks as data: per task, the pipeline's recipe as users run it, the plain-Trainer flags that
replicate it, and the transformers example script's defaults (what users run instead). Adding a task is one entry.

Example-script defaults (transformers examples/pytorch run_ner.py / run_summarization.py / run_translation.py / run_glue.py / run_qa.py /
run_clm.py, which take TrainingArguments' defaults): learning rate 5e-5, 3 epochs, batch 8 per device, weight decay
0, no warm-up, linear schedule, a random order; run_ner, run_summarization, run_translation: dynamic padding per
batch (pad_to_max_length false); run_glue and run_qa: pad_to_max_length TRUE (every example padded to
max_seq_length: 128 for run_glue, 384 with doc_stride 128 for run_qa); run_ner: max_seq_length = the tokenizer's
maximum; run_summarization / run_translation: max_source_length 1024, max_target_length 128, eval metric eval_loss
(predict_with_generate false); run_clm: block_size = min(1024, the model's positions), eval metric eval_loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES = ["--learning_rate", "5e-5", "--epochs", "3", "--batch_size", "8", "--weight_decay", "0", "--warmup", "0",
            "--sampling", "random", "--padding", "dynamic"]


@dataclass
class BenchTask:
    title: str
    model: str | None  # "minilm" (pretrained, offline) or a SCRATCH key of benchmarks/run.py; None: not built yet
    metric: str = "loss"  # what quality.py measures on validation: f1 (higher is better) or loss (lower)
    pending: str | None = None  # why it is not measured yet
    recipe: list = field(default_factory=list)  # pipeline overrides: the recipe as users run it ({data}, {model})
    data_args: list = field(default_factory=list)  # baseline_trainer.py: model, data and task flags
    same_as_recipe: list = field(default_factory=list)  # baseline_trainer.py flags that replicate the recipe
    examples: list = field(default_factory=list)  # baseline_trainer.py flags of the example script's defaults
    recipe_batch: int = 16

    def fill(self, items, data: Path, dirs: dict) -> list[str]:
        return [str(x).format(data=data, model=dirs.get(self.model, "")) for x in items]


TASKS = {
    "ner": BenchTask(
        "NER: MiniLM (pretrained, offline) on CoNLL-2003", "minilm", metric="f1",
        recipe=["recipe=minilm-ner", "data.dir={data}/conll2003"],
        data_args=["--task", "ner", "--model_dir", "{model}", "--data_dir", "{data}/conll2003"],
        same_as_recipe=["--learning_rate", "2e-4", "--batch_size", "16", "--max_length", "128",
                        "--sampling", "group_by_length", "--group_order", "shuffled"],
        examples=EXAMPLES + ["--max_length", "0"]),
    "summarization": BenchTask(
        "Summarization: scratch T5 on DialogSum", "t5",
        recipe=["recipe=t5-summarization", "data=dialogsum-local", "data.dir={data}/dialogsum",
                "model.name_or_path={model}", "model.family=t5"],
        data_args=["--task", "summarization", "--model_dir", "{model}", "--data_dir", "{data}/dialogsum",
                   "--source_prefix", "summarize: "],
        same_as_recipe=["--learning_rate", "3e-4", "--batch_size", "16", "--max_source_length", "512",
                        "--max_target_length", "128", "--sampling", "group_by_length", "--group_order", "shuffled"],
        examples=EXAMPLES + ["--max_source_length", "1024", "--max_target_length", "128"]),
    "generation": BenchTask(
        "Causal LM: scratch GPT-2 on tiny Shakespeare", "gpt2",
        recipe=["recipe=gpt2-generation", "data=tinyshakespeare", "data.train_file={data}/tinyshakespeare/input.txt",
                "model.name_or_path={model}", "model.family=gpt2"],
        data_args=["--task", "generation", "--model_dir", "{model}", "--data_dir", "{data}/tinyshakespeare"],
        same_as_recipe=["--learning_rate", "5e-5", "--batch_size", "16", "--block_size", "256"],
        examples=EXAMPLES + ["--block_size", "512"]),  # min(1024, 512 positions of the scratch GPT-2)
    "classification": BenchTask(
        "Classification: MiniLM (pretrained, offline) on SST-2", "minilm", metric="accuracy",
        recipe=["recipe=minilm-sst2", "data.dir={data}/sst2"],
        data_args=["--task", "classification", "--model_dir", "{model}", "--data_dir", "{data}/sst2"],
        same_as_recipe=["--learning_rate", "5e-5", "--batch_size", "32", "--max_length", "128",
                        "--sampling", "group_by_length", "--group_order", "shuffled"],
        examples=EXAMPLES + ["--max_length", "128", "--padding", "max_length"], recipe_batch=32),
    "qa": BenchTask(
        "Extractive QA: MiniLM (pretrained, offline) on SQuAD", "minilm", metric="f1",
        recipe=["recipe=minilm-squad", "data.dir={data}/squad"],
        data_args=["--task", "qa", "--model_dir", "{model}", "--data_dir", "{data}/squad"],
        same_as_recipe=["--learning_rate", "2e-4", "--batch_size", "16", "--max_length", "256", "--doc_stride", "96",
                        "--sampling", "group_by_length", "--group_order", "shuffled"],
        examples=EXAMPLES + ["--max_length", "384", "--doc_stride", "128", "--padding", "max_length"]),
    "translation": BenchTask(
        "Translation: scratch T5 on Multi30k en-de", "t5-mt",
        recipe=["recipe=t5-multi30k", "data.dir={data}/multi30k", "model.init=pretrained", "model.name_or_path={model}"],
        data_args=["--task", "translation", "--model_dir", "{model}", "--data_dir", "{data}/multi30k",
                   "--source_prefix", "translate English to German: "],
        same_as_recipe=["--learning_rate", "1e-3", "--batch_size", "64", "--warmup", "0.05", "--max_source_length",
                        "64", "--max_target_length", "64", "--sampling", "group_by_length", "--group_order", "shuffled"],
        examples=EXAMPLES + ["--max_source_length", "1024", "--max_target_length", "128"], recipe_batch=64),
}
MEASURED = [name for name, t in TASKS.items() if not t.pending]
