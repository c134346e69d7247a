"""SQuAD v1.1 exact match and token F1 of predicted answer texts against reference answers, as an evaluate module.

The official v1.1 script's normalisation (lowercase, punctuation removed, articles a / an / the removed, whitespace
collapsed) and scoring: a prediction gets the best score over its references; scores are averaged over questions.
Reported as fractions in [0, 1] like the project's other metrics (the official script prints percentages: x 100).
"""

import collections
import re
import string

import datasets
import evaluate

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD v1.1 exact match and token F1 (best over the reference answers, mean over questions).",
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, EMNLP 2016",
            inputs_description="predictions: list of str; references: list of lists of str (every gold answer)",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references):
        em = f1 = 0.0
        for pred, refs in zip(predictions, references):
            refs = list(refs) or [""]
            em += max(exact_match(pred, r) for r in refs)
            f1 += max(token_f1(pred, r) for r in refs)
        n = max(1, len(predictions))
        return {"exact_match": em / n, "f1": f1 / n}
