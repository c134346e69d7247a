"""Summarization with encoder-decoder models: document -> summary, ROUGE on generated summaries."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from omegaconf import MISSING

from pipeline.data import synthetic as gen
from pipeline.families import model_family, task_prefix
from pipeline.metrics import load_metric
from pipeline.tasks import seq2seq
from pipeline.tasks.seq2seq import Seq2SeqTask


@dataclass
class Config(seq2seq.Config):
    source_prefix: str = MISSING      # auto: the checkpoint's task_specific_params, else T5's "summarize: "


class SummarizationTask(Seq2SeqTask):
    name = "summarization"
    Config = Config
    pipeline_tag = "summarization"
    card_metric_type = "rouge"
    columns = ("document", "summary")
    input_fields = ("document",)
    input_aliases = {"document": ("dialogue", "text")}
    output_field = "summary"

    @functools.cached_property
    def prefix(self) -> str:
        p = self.tcfg.source_prefix
        if p != "auto":
            return p or ""
        own = task_prefix(self.cfg.model, "summarization")  # the checkpoint's own, else its type's
        return own if own is not None else model_family(self.cfg.model).source_prefix

    def synthetic_row(self, rng, split):
        name, place = gen.name(rng, split), rng.choice(gen.PLACE)
        day, time, item = rng.choice(gen.DAY), rng.choice(gen.TIME), rng.choice(gen.ITEM)
        doc = (f"#Person1#: Hi {name}, shall we meet at the {place} on {day}? "
               f"#Person2#: Sure. Is {time} fine? #Person1#: Perfect. Please bring {item}. #Person2#: Will do, see you.")
        return {"document": doc,
                "summary": f"{name} will meet #Person1# at the {place} on {day} at {time} and bring {item}."}

    def sources(self, batch):
        return [self.prefix + str(d) for d in batch["document"]]

    def targets(self, batch):
        return list(batch["summary"])

    def score(self, predictions, references):
        return load_metric("rouge").compute(predictions=predictions, references=references)

    def sample_row(self, row, generated):
        return {"document": row["document"], "reference": row["summary"], "generated": generated}


TASK_CLASS = SummarizationTask
