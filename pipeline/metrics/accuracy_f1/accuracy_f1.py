"""Accuracy, macro-F1 and per-class F1 of class predictions (scikit-learn), as an evaluate module.

``predictions`` / ``references`` are class ids; ``label_names`` (id order) names the per-class keys
``f1_<name>``. Macro-F1 is scikit-learn's: the unweighted mean over the classes that occur in the references or the
predictions; a class neither predicted nor present scores 0 in its own ``f1_<name>`` and is left out of the mean.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, f1_score

_KWARGS = """
Args:
    predictions: list of class ids
    references: list of class ids
    label_names: class names in id order (keys f1_<name>; default: the ids)
"""


def key(name) -> str:
    """A metric key part for a class name: whitespace and '/' become '_' (TensorBoard / MLflow-safe)."""
    return "_".join(str(name).replace("/", "_").split())


class AccuracyF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Accuracy, macro-F1 and F1 per class for single-label classification.",
            citation="scikit-learn: Pedregosa et al., JMLR 12, 2011",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, label_names=None):
        names = list(label_names) if label_names is not None else sorted(set(references) | set(predictions))
        ids = list(range(len(names))) if label_names is not None else names
        out = {"accuracy": float(accuracy_score(references, predictions)),
               "macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0))}
        per_class = f1_score(references, predictions, labels=ids, average=None, zero_division=0)
        out.update({f"f1_{key(n)}": float(v) for n, v in zip(names, per_class)})
        return out
