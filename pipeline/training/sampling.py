"""Length-grouped batches visited in a shuffled order (``trainer.group_order: shuffled``, the default).

transformers' LengthGroupedSampler (``train_sampling_strategy: group_by_length``) shuffles the data, cuts it into
mega-batches of up to 50 batches and sorts each mega-batch by length, longest first: batches of similar length (little
padding, the 2x speed-up of benchmarks/), but visited long -> short, 50 batches at a time, all through training. The
optimiser sees that periodic drift: MiniLM on CoNLL-2003 (lr 2e-4, 2 epochs) reached val F1 0.895 with it and 0.911
with a plain random order. Here the same batches are visited in a random order; the longest batch stays first (an
out-of-memory error shows at step 1) and a partial batch stays last (so later batches keep their boundaries).
"""

from __future__ import annotations

import torch
from torch.utils.data import SequentialSampler
from transformers.trainer_pt_utils import LengthGroupedSampler


class ShuffledLengthGroupedSampler(LengthGroupedSampler):
    def __iter__(self):
        order = list(super().__iter__())
        size = self.batch_size
        batches = [order[i:i + size] for i in range(0, len(order), size)]
        tail = [batches.pop()] if len(batches) > 1 and len(batches[-1]) < size else []
        head, rest = batches[:1], batches[1:]
        perm = torch.randperm(len(rest), generator=self.generator).tolist()
        return iter([i for batch in head + [rest[j] for j in perm] + tail for i in batch])


def with_group_order(trainer_class, order: str):
    """``trainer_class`` itself (``sorted``: the library's order), or a subclass whose group_by_length sampler
    visits its batches in a shuffled order (``shuffled``; other values are refused by check.py)."""
    if order != "shuffled":
        return trainer_class

    class Trainer(trainer_class):
        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                return ShuffledLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths,
                                                    generator=sampler.generator)
            return sampler

    Trainer.__name__ = Trainer.__qualname__ = trainer_class.__name__
    return Trainer


def in_order_eval(trainer_class):
    """``trainer_class`` evaluating in dataset order. transformers 5 evaluates with a length-grouped (shuffled)
    sampler when ``train_sampling_strategy=group_by_length``: predictions then no longer line up with the rows they
    came from (samples.jsonl paired NER rows with other rows' tags; extractive QA scores windows by position). Every
    task's Trainer evaluates in order (build_trainer). Several processes: the library's default (None: accelerate
    shards in order and ``gather_for_metrics`` restores it)."""

    class Trainer(trainer_class):
        def _get_eval_sampler(self, eval_dataset):
            if eval_dataset is None or not hasattr(eval_dataset, "__len__"):
                return None
            return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    Trainer.__name__ = Trainer.__qualname__ = trainer_class.__name__
    return Trainer
