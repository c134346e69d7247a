"""MFU arithmetic (pipeline/training/flops.py, peaks.py, throughput.py): model FLOPs equal torch's FLOP counter, the meter
counts this process's steps of this session only (not the Trainer's rank-summed, resume-inclusive total_flos), the
peak is the one of the dtype the run trains in, GPU names match exactly."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import transformers as tf

from pipeline.training import peaks
from pipeline.training import throughput
from pipeline.training.flops import FlopPlan

B, S, T = 3, 17, 9


def _bert():
    return tf.BertForTokenClassification(tf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=4, intermediate_size=64, num_labels=5))


def _gpt2():
    return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                            bos_token_id=0, eos_token_id=0))


def _t5():
    return tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=100, d_model=32, d_kv=8, num_heads=4, num_layers=2,
                                                     num_decoder_layers=3, d_ff=64, decoder_start_token_id=0))


def _counted(model, batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    return counter.get_total_flops()


def _batch(kind):
    torch.manual_seed(0)
    ids = torch.randint(1, 100, (B, S))
    labels = {"bert": torch.randint(0, 5, (B, S)), "gpt2": ids, "t5": torch.randint(1, 100, (B, T))}[kind]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


@pytest.mark.parametrize("kind, build", [("bert", _bert), ("gpt2", _gpt2), ("t5", _t5)])
def test_model_flops_equal_torch_flop_counter_for_full_fine_tuning(kind, build):
    model = build()
    target = (B, T) if kind == "t5" else None
    assert FlopPlan(model).batch_flops((B, S), target) == _counted(model, _batch(kind))


@pytest.mark.parametrize("kind, build, modules", [("gpt2", _gpt2, ["c_attn", "c_fc"]), ("t5", _t5, ["q", "k", "v", "o"])])
def test_model_flops_of_lora_count_frozen_weights_without_weight_gradients(kind, build, modules):
    import peft

    model = peft.get_peft_model(build(), peft.LoraConfig(r=4, target_modules=modules, fan_in_fan_out=kind == "gpt2"))
    counted = _counted(model, _batch(kind))
    planned = FlopPlan(model).batch_flops((B, S), (B, T) if kind == "t5" else None)
    # frozen weights at 4 FLOPs/token (6 would be +~45%); the only excess: input gradients autograd skips in layer 1
    assert counted <= planned < 1.06 * counted


class _Blocks(torch.utils.data.Dataset):
    """Causal-LM blocks of one length: every batch has the same shape, so FLOPs per step are a constant."""

    def __len__(self):
        return 32

    def __getitem__(self, i):
        ids = torch.randint(1, 100, (16,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _trainer(tmp_path, max_steps, peak=1e12, callbacks=None, eval_dataset=None, **args):
    torch.manual_seed(0)
    model = _gpt2()
    targs = tf.TrainingArguments(output_dir=str(tmp_path / "ckpt"), max_steps=max_steps, per_device_train_batch_size=4,
                                 save_strategy="steps", save_steps=2, report_to="none", disable_tqdm=True,
                                 use_cpu=True, dataloader_pin_memory=False, **args)
    trainer = tf.Trainer(model=model, args=targs, train_dataset=_Blocks(), eval_dataset=eval_dataset,
                         callbacks=callbacks)
    throughput.attach(trainer, peak_flops=peak)
    return trainer


STEP_FLOPS = FlopPlan(_gpt2()).batch_flops((4, 16))


def test_meter_counts_this_sessions_steps_only_after_a_resume(tmp_path):
    first = _trainer(tmp_path, max_steps=2)
    first.train()
    assert throughput.facts(first)["train_model_flops"] == 2 * STEP_FLOPS
    resumed = _trainer(tmp_path, max_steps=5)
    resumed.train(resume_from_checkpoint=True)
    facts = throughput.facts(resumed)
    assert resumed.state.global_step == 5
    assert facts["train_model_flops"] == 3 * STEP_FLOPS  # steps 3-5; the checkpoint's total_flos includes 1-2
    assert facts["mfu"] == pytest.approx(facts["train_model_flops_per_second"] / 1e12)


def test_mfu_ignores_the_trainers_rank_summed_total_flos(tmp_path):
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.train()
    before = throughput.facts(trainer)
    trainer.state.total_flos = 1e30  # what summing over ranks / steps before a resume would add
    after = throughput.facts(trainer)
    assert after["mfu"] == before["mfu"] and after["train_model_flops"] == 2 * STEP_FLOPS


def test_evaluation_time_is_left_out_of_training_time_and_eval_rows_carry_it(tmp_path):
    import time

    class SlowEvaluation(tf.TrainerCallback):  # runs before the meter's on_evaluate: inside the evaluation
        def on_evaluate(self, *a, **k):
            time.sleep(0.5)

    trainer = _trainer(tmp_path, max_steps=4, callbacks=[SlowEvaluation()], eval_dataset=_Blocks(),
                       eval_strategy="steps", eval_steps=2)
    runtime = trainer.train().metrics["train_runtime"]
    facts = throughput.facts(trainer)
    assert facts["train_loop_seconds"] < runtime - 1.0  # two evaluations of > 0.5 s each are not training
    evals = [row for row in trainer.state.log_history if "eval_loss" in row]
    assert [row["step"] for row in evals] == [2, 4]
    assert 0 < evals[0]["train_seconds"] < evals[1]["train_seconds"] <= facts["train_loop_seconds"] + 1e-3


def test_compute_dtype_follows_the_precision_the_run_trains_in():
    assert peaks.compute_dtype(SimpleNamespace(bf16=True, fp16=False, use_cpu=True)) == "bf16"
    assert peaks.compute_dtype(SimpleNamespace(bf16=False, fp16=True, use_cpu=True)) == "fp16"
    assert peaks.compute_dtype(SimpleNamespace(bf16=False, fp16=False, use_cpu=True)) == "fp32"


@pytest.fixture
def cached_cpu_peaks(tmp_path, monkeypatch):
    """A peak cache holding fp32 = 1e11 and bf16 = 8e11 for this CPU at the current thread count."""
    path = tmp_path / "peak-flops.json"
    threads = torch.get_num_threads()
    path.write_text(json.dumps({peaks.cpu_key("fp32", threads): 1e11, peaks.cpu_key("bf16", threads): 8e11}))
    monkeypatch.setattr(peaks, "cache_file", lambda: path)
    return path


def test_a_bf16_run_is_measured_against_the_bf16_peak_and_fp32_against_fp32(tmp_path, cached_cpu_peaks):
    for bf16, peak in ((False, 1e11), (True, 8e11)):
        trainer = _trainer(tmp_path / str(bf16), max_steps=2, peak=None, bf16=bf16)
        trainer.train()
        facts = throughput.facts(trainer)
        assert (facts["compute_dtype"], facts["peak_flops"]) == ("bf16" if bf16 else "fp32", peak)
        assert facts["mfu"] == pytest.approx(facts["train_model_flops_per_second"] / peak)


def test_cpu_probe_is_cached_per_dtype_and_threads(tmp_path, monkeypatch):
    path = tmp_path / "peak-flops.json"
    monkeypatch.setattr(peaks, "cache_file", lambda: path)
    monkeypatch.setattr(peaks.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # a quiet machine: the probe is cached
    calls = []
    monkeypatch.setattr(peaks, "measure_matmul", lambda dtype, threads: calls.append((dtype, threads)) or 5e10)
    assert peaks.cpu_peak("fp32", 1)[0] == 5e10 and peaks.cpu_peak("fp32", 1)[0] == 5e10
    peaks.cpu_peak("bf16", 1)
    assert calls == [("fp32", 1), ("bf16", 1)]
    assert set(json.loads(path.read_text())) == {peaks.cpu_key("fp32", 1), peaks.cpu_key("bf16", 1)}


def test_cpu_probe_on_a_busy_machine_is_reported_and_not_cached(tmp_path, monkeypatch):
    path = tmp_path / "peak-flops.json"
    monkeypatch.setattr(peaks, "cache_file", lambda: path)
    monkeypatch.setattr(peaks.os, "getloadavg", lambda: (64.0, 0.0, 0.0))
    monkeypatch.setattr(peaks, "measure_matmul", lambda dtype, threads: 5e10)
    value, source = peaks.cpu_peak("fp32", 1)
    assert value == 5e10 and "busy machine" in source and not path.exists()


def test_measured_matmul_probe_returns_a_positive_rate():
    assert peaks.measure_matmul("fp32", 1, shapes=((64, 64, 64),), seconds=0.01) > 0


def test_gpu_peaks_match_exact_names_and_dtypes():
    assert peaks.gpu_peak("NVIDIA L40S", "bf16") == 362e12
    assert peaks.gpu_peak("NVIDIA L4", "bf16") == 121e12
    assert peaks.gpu_peak("NVIDIA A10G", "bf16") is None  # not an A10 (no substring match)
    assert peaks.gpu_peak("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert peaks.gpu_peak("NVIDIA A100-SXM4-80GB", "fp32") == 19.5e12
    assert peaks.gpu_peak("NVIDIA A100-SXM4-80GB", "tf32") == 156e12
    assert peaks.gpu_peak("Tesla T4", "bf16") is None  # no bf16 tensor cores


def test_given_peak_overrides_and_zero_turns_mfu_off():
    assert peaks.peak_flops("fp32", override=2e12) == (2e12, "given")
    assert peaks.peak_flops("bf16", override=0)[0] is None


@pytest.mark.parametrize("value, expected", [(None, None), ("auto", None), (0, 0.0), (1.5e12, 1.5e12)])
def test_trainer_peak_flops_key_accepts_auto_zero_and_numbers(value, expected):
    from pipeline.training.trainer import peak_flops

    assert peak_flops(value) == expected


@pytest.mark.parametrize("value", ["fast", -1, [1]])
def test_trainer_peak_flops_key_refuses_other_values_with_one_line(value):
    from pipeline.errors import ConfigError
    from pipeline.training.trainer import peak_flops

    with pytest.raises(ConfigError, match="trainer.peak_flops"):
        peak_flops(value)
