"""Perplexity from mean token negative log-likelihoods: exp(sum(w * loss) / sum(w)), as an evaluate module.

The Hub's ``perplexity`` metric re-runs a model; this one takes losses already computed by the Trainer
(eval_loss is the mean token NLL), weighted by token counts when several batches are combined.
"""

import math

import datasets
import evaluate


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Perplexity = exp(weighted mean token NLL).",
            citation="",
            inputs_description="losses: list of mean NLL (nats); weights: list of token counts",
            features=datasets.Features({"losses": datasets.Value("float64"), "weights": datasets.Value("int64")}),
        )

    def _compute(self, losses, weights):
        total = sum(weights)
        if total <= 0:
            raise ValueError("weights must sum to a positive token count")
        mean = sum(l * w for l, w in zip(losses, weights)) / total
        return {"perplexity": math.exp(mean) if mean < 700 else float("inf"), "mean_nll": mean}
