"""FSDP2 on CPU processes: the accelerate config users launch on GPUs (conf/accelerate/fsdp.yaml) also shards the
model over 2+ CPU processes (gloo), so the sharded path runs where no GPU is.

Why a hook is needed (accelerate 1.15, state.py ``AcceleratorState.__init__``): a CPU multi-process run is
``MULTI_CPU`` (``use_cpu=True``, set by pipeline/infra/distributed.training_fields), and accelerate turns a run
into ``FSDP`` only when it is ``MULTI_GPU`` / ``MULTI_XPU`` / ...: on CPU ``ACCELERATE_USE_FSDP=true`` is dropped
without a word and every rank trains a full DDP replica. torch's FSDP2 (``fully_shard``) itself runs on CPU: its
default mesh is a CPU mesh over the gloo group (torch/distributed/fsdp/_fully_shard/_fsdp_init.py), and
accelerate's ``fsdp2_prepare_model`` shards on the meta device and loads the full state dict into the shards,
neither of which needs CUDA. So after Trainer builds its Accelerator, a MULTI_CPU run that asked for FSDP becomes
an FSDP run with the plugin accelerate would have built from the same environment (FullyShardedDataParallelPlugin
reads FSDP_* exactly as on GPUs). On GPUs nothing here runs: accelerate's own path is taken.
"""

from __future__ import annotations

import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from pipeline.infra import distributed


def wants_cpu_fsdp() -> bool:
    """FSDP asked for by the launcher, several processes, no GPU: the case accelerate drops."""
    return distributed.env_true("ACCELERATE_USE_FSDP") and distributed.world_size() > 1 \
        and not torch.cuda.is_available()


def fsdp_on_cpu(trainer_class):
    """``trainer_class`` whose Accelerator shards with FSDP on CPU processes (``trainer_class`` itself elsewhere)."""
    if not wants_cpu_fsdp():
        return trainer_class

    class Trainer(trainer_class):
        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            state = self.accelerator.state
            if state.distributed_type == DistributedType.MULTI_CPU:
                plugin = FullyShardedDataParallelPlugin()  # from FSDP_* of the accelerate config, as on GPUs
                for shared in (AcceleratorState._shared_state, PartialState._shared_state):
                    shared["distributed_type"] = DistributedType.FSDP
                AcceleratorState._shared_state["fsdp_plugin"] = plugin
                self.is_fsdp_enabled = True  # what Trainer derived from the state above, before this fix

    Trainer.__name__ = Trainer.__qualname__ = trainer_class.__name__
    return Trainer
