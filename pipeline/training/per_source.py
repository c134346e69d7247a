"""Evaluation per source of a ``data.mixture`` (pipeline/data/mixture.py), besides the combined one.

transformers' Trainer takes a dict of eval datasets, but then names every metric ``eval_<key>_<metric>``: no plain
``eval_<metric>`` is left for the combined data, and ``metric_for_best_model`` would have to name a key. Here the
combined validation split stays the Trainer's ``eval_dataset`` (``eval_<metric>``: the best checkpoint, early
stopping and the reports follow it), and each source's validation split is evaluated with it, named as the library
names dict entries (``eval_<source>_<metric>``), logged in one more log entry and returned with the combined metrics
(so ``metric_for_best_model=<source>_<metric>``, set by ``data.mixture_best=<source>``, finds it).
"""

from __future__ import annotations


def per_source_eval(trainer_class):
    """``trainer_class`` that also evaluates ``self.source_eval`` ({name: (tokenised validation split, its
    compute_metrics)}) whenever it evaluates its own eval dataset."""

    class Trainer(trainer_class):
        source_eval: dict = {}

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            result = super().evaluate(eval_dataset=eval_dataset, ignore_keys=ignore_keys,
                                      metric_key_prefix=metric_key_prefix)
            if eval_dataset is not None or not self.source_eval or isinstance(self.eval_dataset, dict):
                return result
            extra = {}
            own = self.compute_metrics
            try:
                for name, (ds, metrics) in self.source_eval.items():
                    self.compute_metrics = metrics if own is not None else None  # QA: metrics of this split's rows
                    out = self.evaluation_loop(self.get_eval_dataloader(ds), description=f"Evaluation ({name})",
                                               prediction_loss_only=True if self.compute_metrics is None else None,
                                               ignore_keys=ignore_keys,
                                               metric_key_prefix=f"{metric_key_prefix}_{name}")
                    extra.update(out.metrics)
            finally:
                self.compute_metrics = own
            self.log(extra)
            return {**result, **extra}

    Trainer.__name__ = Trainer.__qualname__ = trainer_class.__name__
    return Trainer
