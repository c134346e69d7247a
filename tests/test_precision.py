"""What ``auto`` resolves to for bf16 / tf32 / pinned memory (pipeline/training/precision.py), decided from given machine
facts: CPU flags with and without bf16 matrix units, CUDA capability; and on this machine through train.py."""

from __future__ import annotations

import pytest

from pipeline.training import precision

AMX = {"fpu", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}  # Sapphire Rapids and later
AVX512_BF16_ONLY = {"fpu", "avx512f", "avx512_bf16"}  # Cooper Lake / Zen 4: bf16 dot products, no matrix unit
PLAIN = {"fpu", "avx2", "fma"}
AUTO = {"bf16": "auto", "tf32": "auto", "dataloader_pin_memory": "auto"}


def test_cpu_flags_read_from_x86_flags_and_arm_features_lines(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx512_bf16 amx_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 sve\n")
    assert precision.cpu_flags(str(x86)) == {"fpu", "avx512_bf16", "amx_bf16"}
    assert precision.cpu_model(str(x86)) == "Some Xeon"
    assert precision.cpu_flags(str(arm)) == {"fp", "asimd", "bf16", "sve"}
    assert precision.cpu_flags(str(tmp_path / "absent")) == frozenset()


@pytest.mark.parametrize("flags, expected", [(AMX, True), (AVX512_BF16_ONLY, False), (PLAIN, False), (set(), False)])
def test_only_amx_counts_as_bf16_matrix_units(flags, expected):
    assert precision.cpu_has_bf16_units(flags) is expected


def test_auto_turns_bf16_on_for_a_cpu_with_amx_and_adds_use_cpu():
    fields = precision.resolve(dict(AUTO), cuda=False, flags=AMX)
    assert fields == {"bf16": True, "tf32": None, "dataloader_pin_memory": False, "use_cpu": True}


@pytest.mark.parametrize("flags", [AVX512_BF16_ONLY, PLAIN])
def test_auto_keeps_bf16_off_on_a_cpu_without_matrix_units(flags):
    fields = precision.resolve(dict(AUTO), cuda=False, flags=flags)
    assert fields == {"bf16": False, "tf32": None, "dataloader_pin_memory": False}


def test_auto_keeps_bf16_off_when_fp16_is_asked_for():
    assert precision.resolve({"bf16": "auto", "fp16": True}, cuda=False, flags=AMX)["bf16"] is False
    assert precision.resolve({"bf16": "auto", "fp16": True}, cuda=True, capability=(8, 0), cuda_bf16=True)["bf16"] is False


def test_auto_on_gpus_ampere_gets_bf16_tf32_and_pinning_older_gets_pinning_only():
    ampere = precision.resolve(dict(AUTO), cuda=True, capability=(8, 0), cuda_bf16=True, flags=PLAIN)
    assert ampere == {"bf16": True, "tf32": True, "dataloader_pin_memory": True}  # no use_cpu on a GPU
    turing = precision.resolve(dict(AUTO), cuda=True, capability=(7, 5), cuda_bf16=False, flags=AMX)
    assert turing == {"bf16": False, "tf32": None, "dataloader_pin_memory": True}  # the host's AMX is not used


def test_auto_stays_off_on_other_accelerators_even_with_amx():
    fields = precision.resolve(dict(AUTO), cuda=False, flags=AMX, other_accelerator=True)
    assert fields == {"bf16": False, "tf32": None, "dataloader_pin_memory": False}


def test_explicit_bf16_on_a_cpu_gets_use_cpu_and_explicit_values_stay():
    assert precision.resolve({"bf16": True}, cuda=False, flags=PLAIN) == {"bf16": True, "use_cpu": True}
    assert precision.resolve({"bf16": False, "tf32": False}, cuda=True, capability=(9, 0), cuda_bf16=True) == {
        "bf16": False, "tf32": False}


def test_training_args_accept_bf16_auto_on_this_machine(tmp_path):
    """train.py resolves auto with this machine's facts and TrainingArguments accepts the result (with use_cpu
    where bf16 ends up on without a GPU, which transformers otherwise refuses)."""
    from conftest import compose
    from pipeline.tasks import get_task
    from pipeline.training.trainer import training_args

    cfg = compose(["debug=smoke", "trainer.bf16=auto"])
    args = training_args(cfg, get_task(cfg), tmp_path)
    facts = precision.machine()
    expected = precision.resolve({"bf16": "auto"}, **facts)["bf16"]
    assert args.bf16 is expected
    if expected and not facts["cuda"]:
        assert args.use_cpu is True
