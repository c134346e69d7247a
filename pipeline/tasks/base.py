"""The interface every task implements. Stages and commands call only these attributes and methods, so everything
about a task (its columns and row checks, generated data, Auto class, PEFT task type and heads, preprocessing,
collator, metrics, generation, inference for ``finetune-predict`` and the model card's pipeline tag) lives in its
module, ``pipeline/tasks/<name>.py``, plus ``conf/task/<name>.yaml``. ``docs/adding-a-task.md`` walks through one.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from omegaconf import OmegaConf
from tqdm.auto import tqdm

from pipeline.data.checks import drop_rows


def batches(items: list, size: int, progress: bool, desc: str):
    """``items`` in chunks of ``size``, with a progress bar on stderr when there are several (inference)."""
    starts = range(0, len(items), size)
    bar = tqdm(starts, desc=desc, unit="batch", disable=not progress or len(starts) < 2, file=sys.stderr)
    for i in bar:
        yield items[i:i + size]


CUT = "_cut_"  # column prefix of preprocess's output: 1 where truncation at task.<key> cut the example


def cut_flags(enc) -> list[int]:
    """For each example of a fast tokenizer's batch output: 1 if truncation cut it (its encoding overflowed)."""
    return [int(bool(e.overflowing)) for e in enc.encodings]


@dataclass
class Config:
    """Keys every ``conf/task/<name>.yaml`` has; each task's ``Config`` extends this (the typed schema the config is
    validated against before any work)."""
    name: str = ""
    metric: str = "loss"              # eval_<metric> selects the best checkpoint (metric_for_best_model)
    greater_is_better: bool = False
    report_metric: str | None = None  # the headline test_<metric> of reports (default: metric)


class Task:
    # -- facts (class attributes) ------------------------------------------------------------------------------
    name: str = ""                        # task.name in conf/task/<name>.yaml
    Config = Config                       # typed schema of the task's config keys
    archs: tuple = ()                     # family architectures that can do it: encoder | decoder | encoder-decoder
    auto_class: str = ""                  # transformers Auto class used to load / build the model
    peft_task_type: str = ""              # peft.TaskType of adapters for it
    pipeline_tag: str = ""                # the Hub's pipeline tag (model card)
    card_metric_type: str = ""            # the metric's name on the Hub card (e.g. seqeval, rouge)
    columns: tuple = ()                   # canonical raw columns (data.columns.<canonical>=<yours> renames)
    optional_columns: tuple = ()          # canonical columns that may be absent
    text_file_format: str = "text"        # what a .txt data file holds for this task (conll for word/tag columns)
    head_names: tuple = ()                # new task head modules: trained whole and saved with adapters; () = LM head
    replaces_head: bool = False           # a checkpoint's own head is replaced (ignore_mismatched_sizes)
    pretokenized: bool = False            # inputs are pre-split words (byte-level BPE needs add_prefix_space)
    length_keys: tuple = ()               # task config keys bounded by the model's positions (check.post_load)
    input_fields: tuple = ("text",)       # what finetune-predict reads per input (first: --text)
    optional_input_fields: tuple = ()     # input fields an input may leave out (e.g. the second text of a pair)
    input_aliases: dict = {}              # other column names accepted for an input field in --file
    output_field: str = ""                # what finetune-predict writes per input
    cli_options: dict = {}                # finetune-predict options of this task: {name: argparse kwargs}
    virtual_token_note: str = ""          # compatibility-table note when prompt-type methods need glue here

    def __init__(self, cfg):
        self.cfg = cfg
        self.tcfg = cfg.task

    # A task is pickled when datasets hashes a function that uses it (the cache key of `map` / `filter`) and when it
    # sends such a function to worker processes (data.num_proc). An OmegaConf node does not hash the same in two
    # processes, so the state is the plain values of the config groups a task reads: the same settings give the same
    # cache key in every run, and an unrelated change (the learning rate) keeps the tokenised data cached.
    _STATE_GROUPS = ("task", "model", "data", "seed", "do_eval")

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("cfg", "tcfg")}
        state["cfg"] = {k: OmegaConf.to_container(self.cfg[k], resolve=True) if OmegaConf.is_config(self.cfg[k])
                        else self.cfg[k] for k in self._STATE_GROUPS if k in self.cfg}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.cfg = OmegaConf.create(state["cfg"])
        self.tcfg = self.cfg.task

    @property
    def report_metric(self) -> str:
        return str(self.tcfg.get("report_metric") or self.tcfg.metric)

    # -- data --------------------------------------------------------------------------------------------------
    def synthetic_row(self, rng, split: str) -> dict:
        """One generated row with the canonical columns (debug=smoke, tests, the quickstart)."""
        raise NotImplementedError

    def raw_rows(self, split: str, d):
        """Reshape one raw split before its canonical columns are selected (e.g. flatten a nested field)."""
        return d

    def clean(self, split: str, d):
        """Check and filter one raw split: returns (dataset, {reason: rows dropped}). Malformed data that cannot be
        fixed by dropping rows raises DataError. Default: rows whose canonical columns are not non-empty strings are
        dropped."""
        return drop_rows(d, self.columns, lambda row: all(isinstance(row[c], str) and row[c].strip()
                                                          for c in self.columns), "empty or non-string text")

    def prepare(self, raw) -> None:
        """Look at the whole raw data once, before any ``max_*_samples`` cap and before the model is built (e.g.
        collect the label set); may rewrite the splits in ``raw`` (counted in ``data_facts``)."""

    mixture_signature_name = ""  # what mixture_signature returns, in words (e.g. "label set")

    def mixture_signature(self):
        """After ``prepare``: what every source of a ``data.mixture`` must share with the others (e.g. the label set
        a classification head is built for), or None when sources need not agree on anything."""
        return None

    def data_facts(self) -> dict:
        """What ``prepare`` found or changed, for metrics.json (e.g. the tag scheme and the tags converted)."""
        return {}

    def tokenizer_corpus(self, raw):
        """Texts a scratch tokenizer is trained on (init=scratch)."""
        raise NotImplementedError

    def preprocess(self, raw, tokenizer, model):
        """Raw DatasetDict -> tokenised DatasetDict (batched, cached ``datasets.map``). Where truncation at a length
        key ``task.<key>`` can cut an example, add a column ``_cut_<key>`` (``cut_flags(enc)``): ``cut_counts``
        counts and removes it, so no example is cut silently."""
        raise NotImplementedError

    def render_rows(self, raw_split, tokenizer) -> list | None:
        """finetune-inspect: each raw row as the text its tokens come from when a template shapes it (a chat
        template's rendering), else None for the row; None: the task renders nothing."""
        return None

    def cut_counts(self, tokenized):
        """(``tokenized`` without its ``_cut_*`` columns, {split: {"task.<key>": examples cut}}); each count is
        warned about and goes to metrics.json ``data_truncated``."""
        counts = {}
        for split, d in tokenized.items():
            cols = [c for c in d.column_names if c.startswith(CUT)]
            for col in cols:
                n = int(sum(d[col]))
                if n:
                    key = f"task.{col[len(CUT):]}"
                    counts.setdefault(split, {})[key] = n
                    logging.getLogger("pipeline").warning(
                        "data: %d of %d %s examples were cut at %s=%s tokens; raise %s to keep them whole", n, len(d),
                        split, key, self.tcfg.get(col[len(CUT):]), key)
            if cols:
                tokenized[split] = d.remove_columns(cols)
        return tokenized, counts

    # -- model -------------------------------------------------------------------------------------------------
    def model_kwargs(self) -> dict:
        """Extra config kwargs for the Auto class (e.g. the label maps)."""
        return {}

    @classmethod
    def adapt(self, tokenizer, model) -> None:
        """After the tokenizer and model are loaded, before preprocessing: what the task adds to them (e.g. special
        tokens and the embeddings resized to them)."""

    @classmethod
    def refuse_method(cls, method_cfg, family) -> str | None:
        """Why a method cannot work on this task (one line: why; use what instead), or None. Called before any data
        or weights are loaded."""
        return None

    def virtual_tokens(self, collator, num_virtual_tokens: int):
        """Prompt-type methods put ``n`` virtual tokens before the input: the collator that keeps labels in line."""
        return collator

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

    def split_metrics(self, raw_split, tokenized_split, tokenizer):
        """compute_metrics for one evaluation split (a mixture source's validation split during training): the
        task's own, unless its metrics need the split's rows (extractive / generative QA)."""
        return self.compute_metrics(tokenizer)

    def trainer_kwargs(self, tokenizer, model) -> dict:
        return {"data_collator": self.collator(tokenizer, model),
                # do_eval=false: no metric module to load (evaluate + rouge/seqeval cost ~1 s of start-up)
                "compute_metrics": self.compute_metrics(tokenizer) if self.cfg.get("do_eval", True) else None,
                "preprocess_logits_for_metrics": self.preprocess_logits_for_metrics()}

    # -- evaluation --------------------------------------------------------------------------------------------
    def evaluate(self, trainer, raw_split, tokenized_split, prefix: str) -> dict:
        """Metrics of one split (``eval_*`` / ``test_*``) from the model's predictions on it."""
        return self.postprocess_metrics(trainer.evaluate(eval_dataset=tokenized_split, metric_key_prefix=prefix),
                                        prefix)

    def postprocess_metrics(self, metrics: dict, prefix: str) -> dict:
        return metrics

    def samples(self, trainer, tokenizer, raw_split, tokenized_split, n: int) -> list[dict]:
        """A few predictions / generations written to samples.jsonl (with the code path of finetune-predict)."""
        return []

    def tokens_per_sample(self, tokenized_split) -> float:
        """Mean non-padding tokens per training sample (for tokens/s)."""
        lengths = [len(x) for x in tokenized_split["input_ids"]]
        return sum(lengths) / max(1, len(lengths))

    # -- inference (finetune-predict) --------------------------------------------------------------------------
    def generation_settings(self, overrides: dict | None = None) -> dict:
        """The task's ``generation`` block with command-line overrides (None values ignored); greedy / beam search
        drops the sampling knobs (transformers warns about them)."""
        block = self.tcfg.generation if "generation" in self.tcfg else {}
        gen = OmegaConf.to_container(block, resolve=True) if not isinstance(block, dict) else dict(block)
        gen.update({k: v for k, v in (overrides or {}).items() if v is not None})
        if not gen.get("do_sample", False):
            for key in ("temperature", "top_p", "top_k"):
                gen.pop(key, None)
        return gen

    def predict(self, model, tokenizer, rows: list[dict], batch_size: int = 8, progress: bool = False,
                generation: dict | None = None, **options) -> list:
        """One output per input row (a dict holding ``input_fields``). ``generation``: overrides of the task's
        generation settings; ``options``: the task's own inference options (others are ignored)."""
        raise NotImplementedError
