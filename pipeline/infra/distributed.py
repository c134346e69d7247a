"""Runs under ``accelerate launch`` / ``torchrun``: one run directory for all ranks, launcher settings that must agree
with the training config, batch size derived from the process count, replicas checked, clean shutdown.

Hooks (one line each): ``commands/app.launch`` calls ``before_hydra()`` and ``shutdown()``; on a failure the app
records ``root_error()`` in status.json, then ``exit_if_secondary()``; ``stages/resolve`` calls ``configure(cfg)``;
``training/trainer.training_args`` calls ``training_fields(fields)``; the report stage merges ``run_facts(trainer)``. ``rank()``, ``world_size()`` and
``is_main()`` are the one place the process's rank is read. With one process (WORLD_SIZE unset or 1) every hook is a
no-op apart from the batch arithmetic. Light imports at module level: this loads at CLI start-up (torch is imported
inside the functions that need a process group).
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import sys
import time
from datetime import timedelta

from pipeline.errors import ConfigError

log = logging.getLogger("pipeline")
STAMP_ENV = "FINETUNE_RUN_STAMP"  # conf/hydra/default.yaml puts it in the run / sweep directory name
# Non-main ranks: no .hydra/ copy, no log file, only warnings on the console (rank 0 logs for the run).
QUIET_RANK_OVERRIDES = ["hydra.output_subdir=null", "hydra.job_logging.root.level=WARNING",
                        "hydra.job_logging.root.handlers=[console]", "hydra.hydra_logging.root.level=WARNING"]
TIMEOUT = timedelta(minutes=30)  # TrainingArguments.ddp_timeout's default


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """The process that writes files (rank 0; the only one without a launcher)."""
    return rank() == 0


def env_true(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


# ---- start-up and shutdown (cli.main) ---------------------------------------------------------------------------

def before_hydra() -> None:
    """Several ranks: start the process group (gloo for CPU objects, plus NCCL on GPUs; accelerate's PartialState
    and DeepSpeed reuse an initialised group), take rank 0's clock as the run directory's timestamp, and quiet the
    other ranks' Hydra output. Every rank resolving ``${now:}`` itself would give one directory per rank."""
    if world_size() <= 1:
        return
    import torch  # only with several processes: `finetune --help` must not import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(timeout=TIMEOUT)  # backend None: gloo for CPU tensors, NCCL for CUDA ones if any
    if STAMP_ENV not in os.environ:
        stamp = [time.strftime("%Y-%m-%d_%H-%M-%S") if rank() == 0 else None]
        dist.broadcast_object_list(stamp, src=0, device=torch.device("cpu"))
        os.environ[STAMP_ENV] = stamp[0]
    if rank() > 0:
        sys.argv += QUIET_RANK_OVERRIDES
    # SIGTERM (the launcher stopping the other ranks when one fails) is lock.raise_on_sigterm's, as for one process


def shutdown() -> None:
    """Destroy the process group at exit (without it, gloo runs crash at interpreter shutdown now and then)."""
    if "torch.distributed" not in sys.modules:  # no group can exist; `finetune --help` must not import torch
        return
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception as e:  # a peer that died first: nothing left to tear down cleanly
        log.debug("destroy_process_group: %s", e)


def exit_process(code: int | str | None) -> None:
    """End a rank of a multi-process run without interpreter finalisation: exit handlers run and output is
    flushed, then ``os._exit``. Finalisation tears down torch's C++ state (gloo's transport threads) in an order
    that aborts now and then ("terminate called without an active exception", SIGABRT after a finished run:
    seen ~1 run in 10 on a loaded 2-core box, after destroy_process_group); the launcher then fails the whole job."""
    if isinstance(code, str):  # sys.exit("message")
        print(code, file=sys.stderr)
        code = 1
    try:
        atexit._run_exitfuncs()  # logging.shutdown, tracker / TensorBoard writers' own handlers
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)


def _store():
    """The process group's TCP store (the launcher's), or None with one process / no group."""
    if world_size() <= 1:
        return None
    try:
        import torch.distributed as dist

        if not dist.is_initialized():
            return None
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(timedelta(seconds=10))
        return store
    except Exception:
        return None


_first: bool | None = None  # this rank failed before any other (None: it has not failed)


def root_error(message: str) -> str:
    """Record this rank's failure; return what the run failed of: ``message`` on the first rank to fail, the first
    rank's error on the others (theirs is typically a lost connection to it). A failure count and the first error
    live in the launcher's store, which outlives the ranks."""
    global _first
    store = _store()
    try:
        _first = store is None or store.add("finetune/failures", 1) == 1
        if _first and store is not None:
            store.set("finetune/error", f"rank {rank()}: {message}")
        return message if _first else store.get("finetune/error").decode()
    except Exception:  # store unreachable: better twice than never
        _first = True
        return message


def exit_if_secondary(exit_code: int = 1) -> None:
    """Called on a failure after ``root_error``: a rank that failed after another one leaves quietly (no second
    traceback, no wait on the broken process group); the first one goes on to show its error."""
    if _first is False:
        print(f"rank {rank()}: stopping, another rank failed first (its error is above)", file=sys.stderr)
        sys.stderr.flush()
        os._exit(exit_code)


# ---- configuration (stages/resolve, training/trainer) -------------------------------------------------------------

def _launcher() -> dict:
    """What accelerate launch exported to this rank (only the settings that must agree with cfg.trainer)."""
    return {
        "mixed_precision": os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower(),
        "deepspeed": env_true("ACCELERATE_USE_DEEPSPEED"),
        "zero_stage": int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0") or 0),
        "ds_accumulation": os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS"),
        "fsdp": env_true("ACCELERATE_USE_FSDP"),
        "fsdp_checkpointing": env_true("FSDP_ACTIVATION_CHECKPOINTING"),
    }


def batch_plan(global_batch: int | None, per_device_max: int, accumulation: int, processes: int) -> tuple[int, int]:
    """(per_device_train_batch_size, gradient_accumulation_steps). Without ``global_batch`` the trainer's values
    stand. With it, ``per_device_max`` is the most one device holds: each process takes global / processes samples
    per optimiser step in the fewest micro-batches that fit, so 1, 2 or 8 processes give the same optimisation."""
    if not global_batch:
        return per_device_max, accumulation
    if global_batch % processes:
        raise ConfigError(f"trainer.global_batch_size={global_batch} does not split over {processes} processes; "
                          f"use a multiple of {processes}")
    per_process = global_batch // processes
    steps = next(k for k in range(1, per_process + 1) if per_process % k == 0 and per_process // k <= per_device_max)
    return per_process // steps, steps


def configure(cfg) -> None:
    """Before data and model: derive the batch from trainer.global_batch_size and refuse launcher settings that
    disagree with cfg.trainer, each with one line. Sets cfg.trainer's batch fields: pipeline/config.py calls it on
    the config it is resolving, before that config becomes read-only."""
    t = cfg.trainer
    per_device, steps = batch_plan(t.get("global_batch_size"), int(t.per_device_train_batch_size),
                                   int(t.gradient_accumulation_steps), world_size())
    if (per_device, steps) != (t.per_device_train_batch_size, t.gradient_accumulation_steps):
        log.info("global batch %s over %d process(es): per-device batch %d x %d accumulation steps",
                 t.global_batch_size, world_size(), per_device, steps)
    t.per_device_train_batch_size, t.gradient_accumulation_steps = per_device, steps
    env = _launcher()
    bf16 = str(t.get("bf16")).lower()  # true | false | auto (bf16 where the GPU has it)
    trainer_mp = "fp16" if t.get("fp16") else "bf16" if bf16 in ("true", "auto") else "no"
    if env["mixed_precision"] not in ("no", trainer_mp):
        raise ConfigError(f"mixed precision: the accelerate config says {env['mixed_precision']} "
                          f"(ACCELERATE_MIXED_PRECISION) but cfg.trainer says {trainer_mp}; set trainer."
                          f"{env['mixed_precision']}=true or mixed_precision: 'no' in the accelerate config")
    if env["ds_accumulation"] not in (None, "auto", str(steps)):
        raise ConfigError(f"gradient accumulation: the DeepSpeed config says {env['ds_accumulation']} but the "
                          f"trainer uses {steps}; drop gradient_accumulation_steps from the accelerate config "
                          f"(the pipeline fills it in)")
    if env["fsdp"] and env["fsdp_checkpointing"] and t.get("activation_checkpointing"):
        raise ConfigError("activation checkpointing is on twice (fsdp_activation_checkpointing in the accelerate "
                          "config and trainer.activation_checkpointing=true); keep FSDP's: "
                          "trainer.activation_checkpointing=false")
    _refuse_known_bad(cfg, env)


def _refuse_known_bad(cfg, env: dict) -> None:
    # FSDP and DeepSpeed both run on CPU processes too (training/sharding.py; DeepSpeed's CPU accelerator over gloo,
    # which JIT-builds its shared-memory allreduce op on first use): no "needs GPUs" refusal
    sharded = "DeepSpeed ZeRO-3" if env["zero_stage"] == 3 else "FSDP" if env["fsdp"] else None
    if cfg.get("rlhf") and sharded:
        # measured on 2 CPU processes with recipe=gpt2-rlhf: ZeRO-3 stopped in the reward model's scoring ("'weight'
        # must be 2-D": it runs outside the sharded Trainer), FSDP made no progress for 7 minutes; ZeRO-2 and DDP ran
        raise ConfigError(f"rlhf={cfg.rlhf.get('algorithm')} under {sharded} is not supported (the reward scoring and "
                          f"TRL's policy / reference models run outside the sharded Trainer); launch it with "
                          f"conf/accelerate/deepspeed-zero2.yaml or ddp.yaml")
    if env["deepspeed"] and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("the accelerate config uses DeepSpeed but it is not installed; pip install deepspeed, "
                          "or launch with conf/accelerate/ddp.yaml")
    m = cfg.method
    quantized = m.get("name") == "qlora" or m.get("load_in_4bit") or m.get("load_in_8bit") or m.get("quantization")
    if quantized and (env["zero_stage"] == 3 or env["fsdp"]):
        raise ConfigError(f"method={m.get('name')} keeps bitsandbytes-quantized base weights, which "
                          f"{'ZeRO-3' if env['deepspeed'] else 'FSDP'} would shard and gather as plain tensors; "
                          f"use conf/accelerate/deepspeed-zero2.yaml or ddp.yaml for quantized training")
    if world_size() > 1 and cfg.trainer.get("train_sampling_strategy") == "group_by_length":
        log.info("group_by_length: length groups are sized by the per-device batch, so which samples share a step "
                 "differs from a run on another process count; train_sampling_strategy=random matches exactly")


def training_fields(fields: dict) -> dict:
    """TrainingArguments fields: drop the pipeline's own key; several processes on a CPU-only machine need
    use_cpu=True, or accelerate picks no backend and each rank trains alone (parallel_mode NOT_PARALLEL)."""
    fields.pop("global_batch_size", None)
    if world_size() > 1:
        import torch

        if not torch.cuda.is_available():
            fields["use_cpu"] = True
        fields.setdefault("ddp_find_unused_parameters", False)
    return fields


# ---- facts for metrics.json (the report stage; every rank calls it) ----------------------------------------------

def run_facts(trainer) -> dict:
    args = trainer.args
    facts = {"per_device_train_batch_size": args.per_device_train_batch_size,
             "gradient_accumulation_steps": args.gradient_accumulation_steps, "processes": args.world_size,
             "effective_batch_size": args.per_device_train_batch_size * args.world_size
             * args.gradient_accumulation_steps,
             "distributed_type": str(trainer.accelerator.distributed_type).split(".")[-1]}
    facts["replicas_in_sync"] = _replicas_in_sync(trainer)
    if trainer.is_fsdp_enabled:
        facts["parameters_sharded"] = _sharded_share(trainer.model)
    return facts


def _sharded_share(model) -> float:
    """FSDP2: the share of parameter elements held as DTensors (sharded over the ranks); 1.0 when all are. Modules
    whose last forward left them gathered (the root after evaluation: reshard_after_forward=False) are resharded
    first; what a module holds between steps is what is measured."""
    from torch.distributed.fsdp import FSDPModule  # torch: see the module docstring (light CLI start-up)
    from torch.distributed.tensor import DTensor

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    return sum(p.numel() for p in params if isinstance(p, DTensor)) / total if total else 0.0


def _replicas_in_sync(trainer) -> bool | None:
    """DDP keeps a full copy of the parameters on every rank: compare per-tensor float64 sums across ranks (exact
    equality). None with one process, or where parameters are sharded (FSDP, ZeRO-3)."""
    import torch
    import torch.distributed as dist

    if trainer.args.world_size <= 1 or not dist.is_initialized() or trainer.is_fsdp_enabled \
            or trainer.is_deepspeed_enabled:
        return None
    model = trainer.accelerator.unwrap_model(trainer.model)
    with torch.no_grad():
        sums = torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, sums.tolist())
    return all(g == gathered[0] for g in gathered)
