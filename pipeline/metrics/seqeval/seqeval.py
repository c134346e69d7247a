"""seqeval entity-level precision / recall / F1 (+ token accuracy) for IOB tagging, as an evaluate module.

Same outputs as the Hub's ``seqeval`` metric: overall_precision, overall_recall, overall_f1, overall_accuracy and
one dict per entity type with precision, recall, f1, number.
"""

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report

_DESCRIPTION = "Entity-level precision, recall and F1 (conlleval semantics) computed with the seqeval package."
_KWARGS = """
Args:
    predictions: list of tag sequences (e.g. [["O", "B-PER", "I-PER"]])
    references: list of tag sequences of the same lengths
    mode: None (conlleval, default) or "strict"; scheme: "IOB2", "IOBES"... with mode="strict"
    zero_division: value for 0/0 (default 0)
"""


class Seqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="seqeval: https://github.com/chakki-works/seqeval",
            inputs_description=_KWARGS,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("string")),
                "references": datasets.Sequence(datasets.Value("string")),
            }),
        )

    def _compute(self, predictions, references, mode=None, scheme=None, zero_division=0):
        if scheme is not None:
            import importlib

            scheme = getattr(importlib.import_module("seqeval.scheme"), scheme)
        report = classification_report(y_true=references, y_pred=predictions, output_dict=True, mode=mode,
                                       scheme=scheme, zero_division=zero_division, suffix=False)
        micro = report.pop("micro avg")
        for key in ("macro avg", "weighted avg"):
            report.pop(key, None)
        scores = {etype: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                          "f1": float(v["f1-score"]), "number": int(v["support"])} for etype, v in report.items()}
        scores.update(overall_precision=float(micro["precision"]), overall_recall=float(micro["recall"]),
                      overall_f1=float(micro["f1-score"]),
                      overall_accuracy=float(accuracy_score(y_true=references, y_pred=predictions)))
        return scores
