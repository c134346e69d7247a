"""Training on a ``datasets`` IterableDataset (``data.streaming=true``, pipeline/data/streaming.py) with several
processes: each rank reads its own part of the stream.

accelerate's default for an IterableDataset is to read it on rank 0 only and send each rank its slice of every
batch (``dispatch_batches``); with ``dispatch_batches=False`` it shards again by itself. Here the train dataloader
of a streamed dataset is built over ``datasets.distributed.split_dataset_by_node(stream, rank, world_size)`` (whole
shards per rank when the file count divides evenly, else every world_size-th row) and is not handed to
``accelerator.prepare`` (which would split it a second time); the Trainer moves each batch to its device itself.
One process: the library's own path.
"""

from __future__ import annotations

import datasets
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader


class EpochLoader(DataLoader):
    """A DataLoader that passes the Trainer's ``set_epoch`` on to the stream (its shuffle seed moves with it)."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def node_streams(trainer_class):
    class Trainer(trainer_class):
        def get_train_dataloader(self):
            ds = self.train_dataset
            if not isinstance(ds, datasets.IterableDataset) or self.args.world_size <= 1:
                return super().get_train_dataloader()
            part = split_dataset_by_node(ds, rank=self.args.process_index, world_size=self.args.world_size)
            return EpochLoader(part, batch_size=self._train_batch_size, collate_fn=self.data_collator,
                               num_workers=self.args.dataloader_num_workers,
                               pin_memory=self.args.dataloader_pin_memory)

    Trainer.__name__ = Trainer.__qualname__ = trainer_class.__name__
    return Trainer
