"""Training around the library Trainer: TrainingArguments and the task's Trainer class (``trainer``), the batch order
(``sampling``), early stopping, guards (complete-checkpoint markers, NaN stop, one-line OOM / disk-full errors),
throughput / FLOPs / MFU (``throughput``, ``flops``, ``peaks``), precision ``auto`` (``precision``) and peak memory
(``memory``)."""
