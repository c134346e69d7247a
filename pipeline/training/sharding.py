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

Tied embeddings shared by more than two modules (T5, BART: ``shared`` = encoder.embed_tokens = decoder.embed_tokens
[= lm_head]), on GPUs too: accelerate's ``fsdp2_prepare_model`` puts the input (and a tied output) embedding in
one FSDP2 group, and the encoder's / decoder's own ``embed_tokens`` modules land in the root group holding the same
Parameter; torch >= 2.13 refuses that at the first forward ("Parameter 'shared.weight' is shared with a parameter
already managed by another FSDP group"). ``group_tied_embeddings`` shards every module holding that weight as one
group before accelerate prepares the model (accelerate skips modules that are already FSDP modules).

Saving (FSDP and DeepSpeed ZeRO-2 alike): the full state dict they gather holds one tensor per name, so transformers' ``save_pretrained`` (which
drops tied copies by storage pointer) keeps every tied copy (T5's model.safetensors carried shared.weight four
times). ``drop_tied_copies`` removes the names the model ties (``all_tied_weights_keys``) when they equal their
source, so model/ is what one process writes.

Generation under DeepSpeed ZeRO-3 (deepspeed 0.19.8): DeepSpeed resets its parameter-fetch trace in a forward
pre-hook on the root module (parameter_offload.py ``_start_of_forward_hook``). A PEFT model's root is the
PeftModel, whose forward ``generate`` never calls (PeftModelForSeq2SeqLM.generate -> the base model's generate ->
its forward), so the step counter never resets: every decoding step walks a trace that grows by one forward per
token. Measured on 2 CPU processes: t5-translation ``method=lora`` finished its 8 training steps in 30 s, then sat in
the first evaluation's ``generate`` for 9 minutes without finishing (py-spy: in ``__params_to_release``), which
looked like a hang; the same model without LoRA evaluated. ``whole_model`` gathers the parameters
once for the generation and takes DeepSpeed's hooks off meanwhile (TRL's ``unwrap_model_for_generation``, what TRL's
own trainers generate under), so each rank generates from the whole model; it costs one copy of the whole model
per rank during evaluation (as TRL's default ``ds3_gather_for_generation``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

from pipeline.infra import distributed


def wants_cpu_fsdp() -> bool:
    """FSDP asked for by the launcher, several processes, no GPU: the case accelerate drops."""
    return distributed.env_true("ACCELERATE_USE_FSDP") and distributed.world_size() > 1 \
        and not torch.cuda.is_available()


def group_tied_embeddings(model, plugin, mesh=None) -> bool:
    """One FSDP2 group for every module holding the input-embedding weight, where more modules hold it than the
    input and output embeddings accelerate groups itself (see the module docstring). True if it sharded them."""
    embed, out = model.get_input_embeddings(), model.get_output_embeddings()
    weight = getattr(embed, "weight", None)
    if weight is None:
        return False
    holders = [m for m in model.modules() if any(p is weight for p in m.parameters(recurse=False))]
    if all(m is embed or m is out for m in holders) or any(isinstance(m, FSDPModule) for m in holders):
        return False
    fully_shard(holders, mesh=mesh, reshard_after_forward=plugin.reshard_after_forward,
                offload_policy=plugin.cpu_offload, mp_policy=plugin.mixed_precision_policy or MixedPrecisionPolicy())
    return True


def drop_tied_copies(model, state_dict: dict) -> dict:
    """``state_dict`` without the tied names (target -> source, transformers' ``all_tied_weights_keys``) whose
    tensor equals its source's: the copies a gathered state dict holds separately."""
    for target, source in (getattr(model, "all_tied_weights_keys", None) or {}).items():
        if target in state_dict and source in state_dict and torch.equal(state_dict[target], state_dict[source]):
            del state_dict[target]
    return state_dict


@contextmanager
def whole_model(trainer):
    """Under DeepSpeed ZeRO-3: the parameters gathered and DeepSpeed's hooks off while the body generates (see the
    module docstring); elsewhere nothing."""
    if not (trainer.is_deepspeed_enabled and is_deepspeed_zero3_enabled()):
        yield
        return
    # imported here: trl adds ~3.6 s of start-up, and only ZeRO-3 runs need it
    from trl.models.utils import unwrap_model_for_generation

    with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator):
        yield


def sharding_fixes(trainer_class):
    """``trainer_class`` whose Accelerator shards with FSDP on CPU processes too, whose FSDP2 runs group tied
    embeddings and whose gathered saves drop tied copies (module docstring); ``trainer_class`` itself when the
    launcher asked for neither FSDP nor DeepSpeed."""
    if not (distributed.env_true("ACCELERATE_USE_FSDP") or distributed.env_true("ACCELERATE_USE_DEEPSPEED")):
        return trainer_class

    class Trainer(trainer_class):
        def _prepare_for_training(self, max_steps, train_dataloader, resume_from_checkpoint):
            plugin = self.accelerator.state.fsdp_plugin if self.is_fsdp_enabled else None
            if plugin is not None and plugin.fsdp_version == 2:
                mesh = getattr(self.accelerator, "torch_device_mesh", None)  # as accelerate's fsdp2_prepare_model
                if mesh is not None:
                    mesh = mesh[tuple(self.accelerator.parallelism_config.fsdp_dim_names)]
                group_tied_embeddings(self.model, plugin, mesh)
            return super()._prepare_for_training(max_steps, train_dataloader, resume_from_checkpoint)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
            if prediction_loss_only or not getattr(self.args, "predict_with_generate", False):
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
            with whole_model(self):
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys,
                                               **gen_kwargs)

        def _save(self, output_dir=None, state_dict=None):
            if state_dict is not None and (self.is_fsdp_enabled or self.is_deepspeed_enabled):
                state_dict = drop_tied_copies(self.accelerator.unwrap_model(self.model), state_dict)
            super()._save(output_dir, state_dict)

        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            state = self.accelerator.state
            if wants_cpu_fsdp() and state.distributed_type == DistributedType.MULTI_CPU:
                plugin = FullyShardedDataParallelPlugin()  # from FSDP_* of the accelerate config, as on GPUs
                for shared in (AcceleratorState._shared_state, PartialState._shared_state):
                    shared["distributed_type"] = DistributedType.FSDP
                AcceleratorState._shared_state["fsdp_plugin"] = plugin
                self.is_fsdp_enabled = True  # what Trainer derived from the state above, before this fix

    Trainer.__name__ = Trainer.__qualname__ = trainer_class.__name__
    return Trainer
