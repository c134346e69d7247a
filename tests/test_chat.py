"""Causal-LM fine-tuning on instruction and chat data (pipeline/tasks/generation.py, chat_format.py, packing.py):
labels outside the assistant turns are -100 under the configured and a model's own template, the template survives
saving, every format is read and bad rows are refused, packed examples do not see each other, and a trained run's
predict --chat stops at the end-of-turn token."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ROOT, compose

CHAT = [{"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Hi, who are you?"},
        {"role": "assistant", "content": "A small model. How can I help?"},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "  Blue.  "}]
CORPUS = [m["content"] for m in CHAT] * 20 + ["system user assistant the old fox watches the river"] * 20
LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
          "m['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def tokenizer():
    from pipeline.families import get_family
    from pipeline.models.scratch import train_tokenizer

    return train_tokenizer(get_family("gpt2"), CORPUS, 400)


def tiny(family="gpt2", vocab=400, attn="sdpa"):
    import transformers

    from pipeline.families import get_family, scratch_config_kwargs

    fam = get_family(family)
    kwargs = scratch_config_kwargs(fam, {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
                                         "max_positions": 128, "dropout": 0.0})
    torch.manual_seed(0)
    config = getattr(transformers, fam.config_class)(vocab_size=vocab, **kwargs)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn)


def task(*overrides):
    from pipeline.tasks import get_task

    return get_task(compose(["recipe=gpt2-instruct", "debug=smoke", *overrides]))


def labelled_runs(tok, ids, labels):
    """Decoded text of each run of consecutive labelled tokens."""
    runs, cur = [], []
    for i, l in zip(ids, labels):
        if l != -100:
            assert l == i
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    return runs + ([tok.decode(cur)] if cur else [])


def encode(tok, messages, train_on="assistant"):
    from pipeline.tasks import chat_format as cf

    return cf.encode(tok, cf.Example(messages=messages), train_on, tok.eos_token_id, cf.end_of_turn(tok))


# -- labels -------------------------------------------------------------------------------------------------------
def test_configured_template_labels_only_assistant_turns_and_their_end_token():
    from pipeline.tasks import chat_format as cf

    tok = tokenizer()
    model = tiny(vocab=len(tok))
    facts = cf.install_template(tok, model, "chatml", prefer_model=True)  # GPT-2 has none: ChatML from conf/
    assert facts["added_tokens"] == ["<|im_start|>", "<|im_end|>"] and facts["end_of_turn"] == "<|im_end|>"
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == len(tokenizer()) + 2  # resized
    ids, labels = encode(tok, CHAT)
    assert tok.decode(ids) == tok.apply_chat_template(CHAT, tokenize=False)
    assert labelled_runs(tok, ids, labels) == ["A small model. How can I help?<|im_end|>", "  Blue.  <|im_end|>"]
    n_trained = len(tok("A small model. How can I help?<|im_end|>")["input_ids"]) + len(tok("  Blue.  <|im_end|>")["input_ids"])
    assert sum(l != -100 for l in labels) == n_trained  # -100 everywhere else (system, user turns, markers)
    ids_all, labels_all = encode(tok, CHAT, "all")
    assert ids_all == ids and labels_all == [-100] + ids[1:]
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])


@pytest.mark.parametrize("own", ["llama3", "zephyr-eos"])
def test_model_own_template_is_kept_and_its_turns_labelled(own):
    """A tokenizer with its own template: nothing is added, the end of turn is found from the template (<|eot_id|>;
    EOS for a Zephyr-style template), the template's own rewriting (| trim) is what is labelled."""
    from pipeline.tasks import chat_format as cf

    tok = tokenizer()
    model = tiny(vocab=len(tok))
    if own == "llama3":
        tok.add_special_tokens({"extra_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
        tok.chat_template, eot, contents = LLAMA3, "<|eot_id|>", ["A small model. How can I help?", "Blue."]
    else:
        from pipeline.tasks.chat_format import load_template

        tok.chat_template, eot, contents = load_template("zephyr")["template"], tok.eos_token, \
            ["A small model. How can I help?", "  Blue.  "]
    n = len(tok)
    facts = cf.install_template(tok, model, "chatml", prefer_model=True)
    assert facts["chat_template"] == "model" and facts["added_tokens"] == [] and len(tok) == n
    assert facts["end_of_turn"] == eot
    ids, labels = encode(tok, CHAT)
    assert labelled_runs(tok, ids, labels) == [c + eot for c in contents]


def test_template_survives_save_and_reload(tmp_path):
    import transformers

    from pipeline.tasks import chat_format as cf

    tok = tokenizer()
    model = tiny(vocab=len(tok))
    cf.install_template(tok, model, "chatml", prefer_model=True)
    tok.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    tok2 = transformers.AutoTokenizer.from_pretrained(tmp_path)
    model2 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert tok2.chat_template == tok.chat_template and (tmp_path / "chat_template.jinja").is_file()
    assert encode(tok2, CHAT) == encode(tok, CHAT)
    assert cf.stop_ids(tok2) == cf.stop_ids(tok) == model2.generation_config.eos_token_id
    facts = cf.install_template(tok2, model2, "chatml", prefer_model=True)  # reloaded: its own template, nothing added
    assert facts["chat_template"] == "model" and facts["added_tokens"] == [] and len(tok2) == len(tok)


def test_lora_trains_the_embedding_rows_of_the_added_template_tokens():
    from pipeline.models import methods
    from pipeline.families import get_family

    t = task("method=lora", "task.format=messages")
    tok = tokenizer()
    model = tiny(vocab=len(tok))
    t.adapt(tok, model)
    new = t.new_token_ids
    assert tok.convert_ids_to_tokens(new) == ["<|im_start|>", "<|im_end|>"]
    peft_model = methods.apply(t.cfg.method, model, get_family("gpt2"), t, total_steps=2)
    ids = torch.tensor([encode(tok, CHAT)[0]])
    rows = lambda: peft_model.get_input_embeddings()(torch.tensor(new + [5])).detach().clone()  # noqa: E731
    before = rows()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    after = rows()
    assert not torch.allclose(before[:2], after[:2]) and torch.equal(before[2], after[2])  # only the new rows move


# -- formats and bad rows ---------------------------------------------------------------------------------------------
FORMAT_ROWS = {  # a row of each format -> the labelled runs (plain text: every token but the first)
    "text": ({"text": "the old fox watches the river"}, [" old fox watches the river<|endoftext|>"]),
    "prompt_completion": ({"prompt": "The old fox", "completion": " watches the river."},
                          [" watches the river.<|endoftext|>"]),
    "conversational_prompt_completion": ({"prompt": [{"role": "user", "content": "Hi"}],
                                          "completion": [{"role": "assistant", "content": "Hello."}]},
                                         ["Hello.<|im_end|>"]),
    "instruction": ({"instruction": "Name a colour.", "input": "", "output": "Blue."}, ["Blue.<|im_end|>"]),
    "instruction_input": ({"instruction": "Repeat.", "input": "fox", "output": "fox"}, ["fox<|im_end|>"]),
    "messages": ({"messages": CHAT}, ["A small model. How can I help?<|im_end|>", "  Blue.  <|im_end|>"]),
    "sharegpt": ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo."}]},
                 ["Yo.<|im_end|>"]),
}


@pytest.mark.parametrize("kind", sorted(FORMAT_ROWS))
def test_every_format_is_read_from_a_file_and_trained_on_its_response(kind, tmp_path):
    from pipeline.data import load_raw

    row, runs = FORMAT_ROWS[kind]
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(row) + "\n" for _ in range(6)))
    extra = ["+data.columns.messages=conversations"] if kind == "sharegpt" else []
    t = task("task.format=auto", "task.packing=false", "task.block_size=128", "data.source=auto", f"data.train_file={f}", *extra)
    raw, dropped, _ = load_raw(t.cfg.data, t, 0)
    assert dropped == {} and len(raw["train"]) == 4
    tok = tokenizer()
    model = tiny(vocab=len(tok))
    t.adapt(tok, model)
    assert bool(tok.chat_template) == t.conversational == ("<|im_end|>" in runs[0])
    first = t.preprocess(raw, tok, model)["train"][0]
    assert labelled_runs(tok, first["input_ids"], first["labels"]) == runs


def test_long_conversations_are_truncated_and_counted_documents_split(tmp_path):
    from pipeline.data import load_raw

    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in [{"messages": CHAT}, {"text": "the old fox " * 12}] * 3))
    t = task("task.format=auto", "task.block_size=24", "data.source=auto", f"data.train_file={f}",
             f"data.validation_file={f}", f"data.test_file={f}")
    raw, _, _ = load_raw(t.cfg.data, t, 0)
    tok = tokenizer()
    model = tiny(vocab=len(tok))
    t.adapt(tok, model)
    data, counts = t.cut_counts(t.preprocess(raw, tok, model))
    assert counts["train"]["examples_truncated"] == 3 and counts["train"]["documents_split"] == 3
    assert max(len(r) for r in data["train"]["input_ids"]) <= 24


def test_rows_of_no_format_are_refused_naming_the_row(tmp_path):
    from pipeline.data import load_raw
    from pipeline.errors import DataError

    f = tmp_path / "d.jsonl"
    rows = [{"instruction": "Say hi.", "output": "Hi."}] * 3 + [{"instruction": "Say hi.", "answer": "Hi."}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = task("task.format=auto", "data.source=auto", f"data.train_file={f}", "data.validation_file=" + str(f), "data.test_file=" + str(f))
    with pytest.raises(DataError, match=r"^data split 'train' row 3: not a text \| prompt/completion \| "
                                        r"instruction/input/output \| messages row \(its fields: \['instruction'\]\)") as e:
        load_raw(t.cfg.data, t, 0)
    assert "\n" not in str(e.value)
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}) + "\n")
    with pytest.raises(DataError, match=r"row 0: message 1 has role 'bot'; use one of system/user/assistant/tool"):
        load_raw(t.cfg.data, t, 0)


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "alpaca").is_dir(), reason="../shared/data is absent")
def test_alpaca_empty_outputs_are_dropped_and_counted():
    from pipeline.data import load_raw

    from pipeline.tasks import get_task

    t = get_task(compose(["recipe=gpt2-instruct", "data=alpaca-local",  # debug=smoke would cap the rows
                          f"data.dir={ROOT.parent / 'shared' / 'data' / 'alpaca'}"]))
    raw, dropped, _ = load_raw(t.cfg.data, t, 0)
    assert dropped == {"train": {"empty response": 2}}
    assert [len(raw[s]) for s in ("train", "validation", "test")] == [3998, 500, 500]


# -- packing --------------------------------------------------------------------------------------------------------
def examples():
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (9, 5, 12, 3, 7, 6):
        ids = torch.randint(3, 100, (n,), generator=g).tolist()
        labels = [-100] + [i if k >= n // 2 else -100 for k, i in enumerate(ids)][1:]  # "responses": second half
        out.append({"input_ids": ids, "labels": labels})
    return out


@pytest.mark.parametrize("family,attn", [("gpt2", "sdpa"), ("gpt2", "eager"), ("llama", "sdpa"), ("llama", "eager")])
def test_packed_and_one_by_one_give_the_same_logits_and_per_example_loss(family, attn):
    """Tolerance 1e-5 (float32; sums in another order). Train mode, dropout 0: the default use_cache would build a
    cache and silently drop the packed-sequence mask; the collator turns it off."""
    import datasets

    from pipeline.tasks import packing

    model = tiny(family, vocab=100, attn=attn).train()
    exs = examples()
    packed = packing.pack(datasets.Dataset.from_list(exs), 16, "bfd")
    assert len(packed) < len(exs) and max(len(r) for r in packed["input_ids"]) <= 16
    batch = packing.CausalCollator(pad_id=0)(list(packed))
    assert "attention_mask" not in batch and batch["use_cache"] is False
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    sums = packing.token_loss_sums(logits, batch["labels"])
    seen = []
    for row, lens in zip(range(len(packed)), [None] * len(packed)):
        pos = batch["position_ids"][row].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0]
        for s, e in zip(starts, starts[1:] + [len(pos)]):
            ids = batch["input_ids"][row, s:e].tolist()
            ex = next((x for x in exs if x["input_ids"] == ids), None)
            if ex is None:
                continue  # the padding tail
            solo = model(input_ids=torch.tensor([ids])).logits[0]
            torch.testing.assert_close(logits[row, s:e], solo, atol=1e-5, rtol=0)
            lab = torch.tensor(ex["labels"])
            ce = torch.nn.functional.cross_entropy(solo[:-1], lab[1:], ignore_index=-100, reduction="sum")
            pce = torch.nn.functional.cross_entropy(logits[row, s:e - 1], lab[1:], ignore_index=-100, reduction="sum")
            assert abs(ce.item() - pce.item()) < 1e-4
            seen.append(ids)
    assert sorted(map(tuple, seen)) == sorted(tuple(x["input_ids"]) for x in exs)
    one_by_one = packing.CausalCollator(pad_id=0)(exs)
    ref = packing.token_loss_sums(model(input_ids=one_by_one["input_ids"],
                                        attention_mask=one_by_one["attention_mask"]).logits, one_by_one["labels"])
    torch.testing.assert_close(sums.sum(0), ref.sum(0), atol=1e-4, rtol=0)  # same response loss, same token count


def test_throughput_counts_the_padding_tail_of_packed_rows():
    import datasets

    from pipeline.tasks import packing
    from pipeline.training.throughput import ThroughputMeter

    model = tiny(vocab=100).train()
    meter = ThroughputMeter(model)
    packed = packing.pack(datasets.Dataset.from_list(examples()), 16, "bfd")
    batch = packing.CausalCollator(pad_id=0)(list(packed))
    model(**batch)
    real = sum(len(r) for r in packed["input_ids"])
    assert meter.processed == batch["input_ids"].numel() > real and int(meter.useful) == real


# -- end to end ------------------------------------------------------------------------------------------------------
def train_run(overrides, run_dir):
    """A finished run directory as ``finetune`` leaves it (.hydra/config.yaml + the run's files)."""
    from omegaconf import OmegaConf

    from pipeline.stages.run import run

    cfg = compose(overrides)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run_dir, run(cfg, run_dir)


@pytest.fixture(scope="module")
def instruct(tmp_path_factory):
    """finetune recipe=gpt2-instruct debug=smoke, trained long enough to learn where answers end."""
    return train_run(["recipe=gpt2-instruct", "debug=smoke", "trainer.num_train_epochs=8"],
                     tmp_path_factory.mktemp("instruct"))


@pytest.mark.slow
def test_instruct_run_learns_responses_and_reports_them(instruct):
    run_dir, m = instruct
    history = [r["eval_response_loss"] for r in json.loads((run_dir / "log_history.json").read_text())
               if "eval_response_loss" in r]
    assert len(history) >= 8 and history[7] < 0.6 * history[0], history  # response-only validation loss per epoch
    assert m["test_perplexity"] == pytest.approx(2.718281828 ** m["test_response_loss"], rel=1e-6)
    assert m["eval_response_tokens"] > 0 and m["train_pad_fraction"] >= 0
    rows = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert rows and {"prompt", "reference", "completion"} <= set(rows[0]) and rows[0]["prompt"][0]["role"] == "user"
    assert (run_dir / "model" / "chat_template.jinja").is_file()


@pytest.mark.slow
def test_predict_chat_stops_at_the_end_of_turn_token(instruct):
    """Greedy generation without the end-of-turn stop runs on past <|im_end|>; predict --chat ends exactly there."""
    from pipeline.commands.predict import Predictor
    from pipeline.tasks import chat_format as cf

    run_dir, _ = instruct
    p = Predictor(run_dir, device="cpu")
    prompt = "Write one sentence about the animal.\n\nthe old fox"
    got = p.predict([prompt], chat=True, generation={"do_sample": False, "max_new_tokens": 40})[0]
    tok, model = p.tokenizer, p.model
    ids = tok(cf.render(tok, [{"role": "user", "content": prompt}], True), return_tensors="pt",
              add_special_tokens=False)["input_ids"]
    raw = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.eos_token_id)[0, ids.shape[1]:].tolist()
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert eot in raw and raw.index(eot) > 0
    assert got == tok.decode(raw[:raw.index(eot)]) and got.startswith("The ") and got.endswith(".")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "pipeline.commands.predict", str(run_dir), "--chat", "--prompt", prompt,
                        "--no-do-sample", "--max-new-tokens", "40", "--quiet"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["completion"] == got


@pytest.mark.slow
def test_llama_style_model_from_config_trains_on_multi_turn_chats(tmp_path):
    run_dir, m = train_run(["recipe=gpt2-instruct", "debug=smoke", "model.family=llama", "task.format=messages",
                            "task.block_size=64", "trainer.num_train_epochs=2"], tmp_path)
    history = [r["eval_response_loss"] for r in json.loads((run_dir / "log_history.json").read_text())
               if "eval_response_loss" in r]
    assert len(history) >= 2 and history[1] < history[0], history
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(run_dir / "model")
    model = transformers.AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert type(model).__name__ == "LlamaForCausalLM" and model.lm_head.weight.shape[0] == len(tok)
    assert tok.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
