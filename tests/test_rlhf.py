"""RLHF stage (pipeline/rlhf/): config group, preference data, and learning on the synthetic preference task with
tiny from-config GPT-2s (CPU, offline). One chained run (SFT -> reward -> GRPO) is shared; the other options run
alone from its model folders, a few steps each."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT, compose, run_pipeline

FAST = ["rlhf.data.synthetic.num_train=128", "rlhf.data.synthetic.num_test=64", "rlhf.eval.num_prompts=64",
        "rlhf.generation.max_completion_length=10"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """finetune recipe=gpt2-rlhf debug=smoke: SFT -> reward model -> GRPO, in one run."""
    run_dir = tmp_path_factory.mktemp("rlhf_chain")
    metrics = run_pipeline(["recipe=gpt2-rlhf", "debug=smoke", "trainer.num_train_epochs=2", *FAST,
                            "rlhf.trainer.learning_rate=2e-3", "rlhf.trainer.per_device_train_batch_size=8",
                            "rlhf.reward.trainer.learning_rate=2e-3", "rlhf.reward.trainer.num_train_epochs=2"],
                           run_dir)
    return run_dir, metrics


def alone(tmp_path, overrides):
    from pipeline.commands.rlhf import rlhf as run_alone

    return run_alone(compose(["recipe=gpt2-generation", "debug=smoke", *FAST, *overrides]), tmp_path)


# -- config -------------------------------------------------------------------------------------------------------
def test_rlhf_group_is_null_by_default_and_composes():
    assert compose([]).get("rlhf") is None
    dpo = compose(["recipe=gpt2-generation", "rlhf=dpo"])
    assert dpo.rlhf.algorithm == "dpo" and dpo.rlhf.policy_path is None
    rl = compose(["recipe=gpt2-rlhf", "rlhf=rloo", "method=lora", "rlhf.beta=0.05"])
    assert (rl.rlhf.algorithm, rl.rlhf.beta, rl.method.name) == ("rloo", 0.05, "lora")
    assert compose(["recipe=gpt2-rlhf"]).rlhf.algorithm == "grpo"  # the recipe's `override /rlhf: grpo`
    assert compose(["recipe=gpt2-dpo", "debug=smoke"]).rlhf.data.synthetic.num_train == 256  # sized like the run


def test_bad_rlhf_settings_are_refused_before_training():
    from pipeline.stages import check
    from pipeline.errors import ConfigError, ModelError

    with pytest.raises(ConfigError, match="needs a causal LM"):
        check.validate(compose(["recipe=quickstart", "rlhf=dpo"]))
    with pytest.raises(ConfigError, match="num_generations=3"):
        check.validate(compose(["recipe=gpt2-rlhf", "debug=smoke", "rlhf.generation.num_generations=3"]))
    with pytest.raises(ModelError, match="rlhf.reward_path"):  # a path: a check of the machine, not the config
        check.environment(compose(["recipe=gpt2-rlhf", "debug=smoke", "rlhf.reward_path=/nowhere"]))


# -- preference data -----------------------------------------------------------------------------------------------
def test_synthetic_preferences_are_deterministic_and_learnable():
    from pipeline.rlhf.preference import MARKER, synthetic

    a, b = synthetic({"num_train": 20, "num_test": 5}, 0), synthetic({"num_train": 20, "num_test": 5}, 0)
    assert a["train"].to_list() == b["train"].to_list()
    assert all(MARKER in r["chosen"] and MARKER not in r["rejected"] for r in a["train"])


def test_local_transcripts_are_split_and_empty_rows_dropped(tmp_path):
    from omegaconf import OmegaConf

    from pipeline.rlhf.preference import load_preferences

    h, a = "\n\nHuman: ", "\n\nAssistant:"
    rows = [{"chosen": f"{h}hi{a} I can help.", "rejected": f"{h}hi{a} I can't."},           # transcripts
            {"chosen": f"{h}ok{a} Sure.", "rejected": f"{h}ok{a}"},                          # empty rejected
            {"chosen": f"{h}why{a} Because.", "rejected": f"{h}why{a} No idea."}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "t.jsonl").write_text(json.dumps({"prompt": "Q:", "chosen": "Q: yes", "rejected": "Q: no"}) + "\n")
    dcfg = OmegaConf.merge(compose(["recipe=gpt2-dpo"]).rlhf.data,
                           {"train_file": str(tmp_path / "p.jsonl"), "test_file": str(tmp_path / "t.jsonl")})
    prefs, dropped = load_preferences(dcfg, 0)
    assert dropped == {"train": 1, "test": 0}
    assert prefs["train"][0] == {"prompt": f"{h}hi{a}", "chosen": " I can help.", "rejected": " I can't."}
    assert prefs["test"][0] == {"prompt": "Q:", "chosen": " yes", "rejected": " no"}  # repeated prompt cut


def test_conversational_pairs_are_rendered_with_the_chat_template(tmp_path):
    """TRL's conversational preference rows (explicit prompt, or implicit: shared first turns) -> strings rendered
    with the template (no policy here: rlhf.data.chat_template, ChatML)."""
    from omegaconf import OmegaConf

    from pipeline.rlhf.preference import chat_renderer, load_preferences

    u, ok, no = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure."}, \
        {"role": "assistant", "content": "No."}
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": [u], "chosen": [ok], "rejected": [no]}) + "\n")
    (tmp_path / "t.jsonl").write_text(json.dumps({"chosen": [u, ok], "rejected": [u, no]}) + "\n")
    dcfg = OmegaConf.merge(compose(["recipe=gpt2-dpo"]).rlhf.data,
                           {"train_file": str(tmp_path / "p.jsonl"), "test_file": str(tmp_path / "t.jsonl")})
    prefs, _ = load_preferences(dcfg, 0, renderer=lambda: chat_renderer("chatml", None))
    want = {"prompt": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "chosen": "Sure.<|im_end|>\n",
            "rejected": "No.<|im_end|>\n"}
    assert prefs["train"][0] == want and prefs["test"][0] == want


def test_dpo_after_chat_sft_uses_the_policy_template(tmp_path):
    """SFT on chat rows (ChatML added to the tiny GPT-2), then DPO on conversational pairs: the prompts the policy
    is measured on end with its generation prompt and generation stops at <|im_end|>."""
    from transformers import AutoTokenizer

    rows = [{"prompt": [{"role": "user", "content": f"Tell me about the {a} fox."}],
             "chosen": [{"role": "assistant", "content": f"The {a} fox finds the garden."}],
             "rejected": [{"role": "assistant", "content": f"The {a} fox finds the road."}]}
            for a in ("small", "old", "quiet", "bright", "lazy", "clever", "brave", "tired")]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = run_pipeline(["recipe=gpt2-dpo", "debug=smoke", "task.format=messages", *FAST, "rlhf.trainer.max_steps=2",
                      f"rlhf.data.train_file={tmp_path / 'p.jsonl'}", f"rlhf.data.test_file={tmp_path / 'p.jsonl'}"],
                     tmp_path / "run")
    assert m["rlhf_algorithm"] == "dpo" and m["rlhf_train_steps"] == 2
    policy = tmp_path / "run" / "policy" / "model"
    tok = AutoTokenizer.from_pretrained(policy)
    gens = [json.loads(x) for x in (tmp_path / "run" / "policy" / "generations.jsonl").read_text().splitlines()]
    assert gens and all(g["prompt"].endswith("<|im_end|>\n<|im_start|>assistant\n") for g in gens)
    stops = json.loads((policy / "generation_config.json").read_text())["eos_token_id"]  # what TRL's GRPO stops at
    assert tok.convert_tokens_to_ids("<|im_end|>") in stops and tok.eos_token_id in stops


def test_rows_without_chosen_rejected_are_one_line_errors(tmp_path):
    from omegaconf import OmegaConf

    from pipeline.rlhf.preference import load_preferences
    from pipeline.errors import DataError

    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "a", "answer": "b"}) + "\n")
    dcfg = OmegaConf.merge(compose(["recipe=gpt2-dpo"]).rlhf.data, {"train_file": str(tmp_path / "p.jsonl"),
                                                                   "test_file": str(tmp_path / "p.jsonl")})
    with pytest.raises(DataError, match="no column 'chosen'") as e:
        load_preferences(dcfg, 0)
    assert "\n" not in str(e.value)


# -- learning ------------------------------------------------------------------------------------------------------
def test_chain_reward_model_beats_chance_and_grpo_raises_reward(chain):
    run_dir, m = chain
    assert m["rlhf_reward_accuracy"] >= 0.8  # chance is 0.5
    assert m["rlhf_mean_reward_after"] > m["rlhf_mean_reward_before"]
    assert m["rlhf_kl_to_reference"] is not None and m["rlhf_kl_to_reference"] > 0
    for sub in ("sft/model", "reward/model", "policy/model"):
        assert (run_dir / sub / "config.json").is_file(), sub
    rows = [json.loads(x) for x in (run_dir / "policy" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == m["rlhf_eval_prompts"] and {"before", "after", "reward_after"} <= set(rows[0])
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["rlhf_algorithm"] == "grpo" and "test_loss" in saved  # SFT and RLHF metrics in one file


def test_dpo_alone_raises_held_out_preference_accuracy(chain, tmp_path):
    run_dir, _ = chain
    m = alone(tmp_path, ["rlhf=dpo", f"rlhf.policy_path={run_dir / 'sft' / 'model'}",
                         "rlhf.trainer.learning_rate=2e-3"])
    assert m["rlhf_preference_accuracy_after"] > m["rlhf_preference_accuracy_before"]
    assert m["rlhf_implicit_reward_accuracy"] > 0.5
    assert json.loads((tmp_path / "metrics.json").read_text())["rlhf_algorithm"] == "dpo"


@pytest.mark.parametrize("option", ["rloo", "kto", "orpo", "grpo-lora", "reward-bert"])
def test_every_option_runs_a_few_steps(chain, tmp_path, option):
    from transformers import AutoModelForCausalLM

    run_dir, _ = chain
    few = ["rlhf.trainer.max_steps=2", f"rlhf.policy_path={run_dir / 'sft' / 'model'}"]
    extra = {"rloo": ["rlhf=rloo", f"rlhf.reward_path={run_dir / 'reward' / 'model'}"],
             "kto": ["rlhf=kto"], "orpo": ["rlhf=orpo"],
             "grpo-lora": ["rlhf=grpo", "method=lora", "rlhf.reward.trainer.max_steps=2"],
             "reward-bert": ["rlhf=reward", "rlhf.reward.init=scratch", "rlhf.reward.family=bert"]}[option]
    m = alone(tmp_path, few + extra)
    assert m["rlhf_algorithm"] == option.split("-")[0]
    assert json.loads((tmp_path / "metrics.json").read_text())["rlhf_algorithm"] == m["rlhf_algorithm"]
    if option == "reward-bert":
        assert 0 <= m["rlhf_reward_accuracy"] <= 1 and (tmp_path / "reward" / "model" / "config.json").is_file()
    else:
        assert m["rlhf_train_steps"] == 2 and "rlhf_preference_accuracy_after" in m
        AutoModelForCausalLM.from_pretrained(tmp_path / "policy" / "model")  # LoRA merged: a plain model folder


def test_rlhf_alone_without_a_policy_is_a_one_line_error(tmp_path):
    import os
    import subprocess

    r = subprocess.run([sys.executable, "-m", "pipeline.commands.rlhf", "rlhf=dpo", f"hydra.run.dir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: finetune-rlhf rlhf=dpo needs rlhf.policy_path=<an earlier "
                                             "run>/model"]
