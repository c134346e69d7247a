"""ROUGE-1/2/L/Lsum F-measure averaged over examples (rouge_score package), as an evaluate module.

Deterministic: plain mean of per-example F1 (the Hub module's bootstrap mid is a random estimate of it).
rougeLsum splits sentences with a regex (the Hub module uses nltk's punkt, which must be downloaded).
"""

import re

import datasets
import evaluate
from rouge_score import rouge_scorer

_SENT = re.compile(r"(?<=[.!?])\s+")


def _sentences(text):
    return "\n".join(s for s in _SENT.split(text.strip()) if s)


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE F-measure (rouge1, rouge2, rougeL, rougeLsum), mean over examples.",
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004",
            inputs_description="predictions: list of str; references: list of str; use_stemmer: bool",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=False):
        rouge_types = rouge_types or ["rouge1", "rouge2", "rougeL", "rougeLsum"]
        scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer)
        totals = {t: 0.0 for t in rouge_types}
        for pred, ref in zip(predictions, references):
            if "rougeLsum" in rouge_types:
                pred, ref = _sentences(pred), _sentences(ref)
            for t, s in scorer.score(ref, pred).items():
                totals[t] += s.fmeasure
        n = max(1, len(predictions))
        return {t: v / n for t, v in totals.items()}
