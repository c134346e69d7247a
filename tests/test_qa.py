"""Question answering against hand-computed values: windows over a context whose answer crosses a window boundary,
span post-processing over several windows, SQuAD exact match / F1, row checks, generated rows; and the checks a run
makes before any data work (a family that cannot do the task)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compose

WORDS = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen".split()
CONTEXT = " ".join(WORDS)


@pytest.fixture(scope="module")
def tokenizer():
    """A WordPiece tokenizer with one token per word: token k of the context is WORDS[k]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "who", "?", *WORDS])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def span(first: int, last: int) -> tuple[int, int]:
    """Character offsets of context words first..last."""
    start = CONTEXT.index(WORDS[first])
    return start, CONTEXT.index(WORDS[last], start) + len(WORDS[last])


def test_windows_overlap_and_label_a_cut_answer_with_cls(tokenizer):
    """max_length 12 = [CLS] who ? [SEP] + 7 context words + [SEP]; stride 3: windows start at words 0, 4, 8, 12.
    The answer "six seven eight" (words 5-7) is cut by the first window (0-6): CLS there; whole in the second
    (4-10): positions 4 + (5 - 4) = 5 to 4 + (7 - 4) = 7; absent from the others: CLS."""
    from pipeline.tasks.qa_spans import windows

    a, b = span(5, 7)
    f = windows(tokenizer, ["who?"], [CONTEXT], max_length=12, stride=3,
                answers=[{"text": [CONTEXT[a:b]], "answer_start": [a]}], token_types=True)
    assert f["example_id"] == [0, 0, 0, 0]
    firsts = [0, 4, 8, 12]
    for ids, first in zip(f["input_ids"], firsts):
        words = tokenizer.convert_ids_to_tokens(ids)
        assert words[:4] == ["[CLS]", "who", "?", "[SEP]"] and words[-1] == "[SEP]"
        assert words[4:-1] == WORDS[first:first + 7]
    assert [len(ids) for ids in f["input_ids"]] == [12, 12, 12, 9]
    assert list(zip(f["start_positions"], f["end_positions"])) == [(0, 0), (5, 7), (0, 0), (0, 0)]
    assert f["token_type_ids"][1] == [0] * 4 + [1] * 8
    offsets = f["offset_mapping"][1]
    assert offsets[:4] == [None] * 4 and offsets[-1] is None  # question and special tokens carry no offsets
    assert [CONTEXT[s:e] for s, e in offsets[4:-1]] == WORDS[4:11]


def test_best_span_over_windows(tokenizer):
    """Hand-set logits over the four windows above (zeros elsewhere):
    window 0: start "six" 4, end "seven" 4                  -> "six seven", 8 (the answer cut by the window)
    window 1: start "six" 5, end "eight" 5                  -> "six seven eight", 10
    window 2: question token 9 / [SEP] 9, start after end 8  -> invalid: not context / end < start
    window 3: start "thirteen" 6, end "sixteen" 6           -> 12, but 4 tokens: only with max_answer_length >= 4"""
    from pipeline.tasks.qa_spans import best_spans, windows

    f = windows(tokenizer, ["who?"], [CONTEXT], max_length=12, stride=3)
    starts = [np.zeros(len(ids)) for ids in f["input_ids"]]
    ends = [np.zeros(len(ids)) for ids in f["input_ids"]]
    starts[0][4 + 5], ends[0][4 + 6] = 4, 4
    starts[1][4 + 1], ends[1][4 + 3] = 5, 5
    starts[2][1], ends[2][11] = 9, 9
    starts[2][4 + 5], ends[2][4 + 1] = 8, 8
    starts[3][4], ends[3][7] = 6, 6

    def best(max_answer_length, skip=0):
        pad = [np.full(skip, 50.0)] * len(starts)  # virtual-token positions before the input
        return best_spans([CONTEXT], f["example_id"], f["offset_mapping"],
                          [np.concatenate([p, s]) for p, s in zip(pad, starts)],
                          [np.concatenate([p, e]) for p, e in zip(pad, ends)], 20, max_answer_length, skip)[0]

    got = best(3)
    assert (got["start"], got["end"]) == span(5, 7) and got["answer"] == "six seven eight"
    assert CONTEXT[got["start"]:got["end"]] == got["answer"] and 0 < got["score"] <= 1
    assert best(3, skip=2) == got  # logits of prompt-tuning's virtual tokens are skipped
    assert best(4)["answer"] == "thirteen fourteen fifteen sixteen"
    assert best(1)["answer"] in WORDS  # one-token spans only


def test_best_span_without_valid_candidate_is_empty():
    from pipeline.tasks.qa_spans import best_spans

    got = best_spans(["abc"], [0], [[None, [0, 3], None]], [np.array([0.0, 1, 9])], [np.array([0.0, 1, 9])], 1, 5)
    assert got == [{"answer": "", "start": 0, "end": 0, "score": 0.0}]  # n_best=1 holds only the [SEP] position


def test_squad_metric_by_hand():
    from pipeline.metrics import load_metric
    from pipeline.metrics.squad.squad import normalize_answer, token_f1

    assert normalize_answer("The  Cat, sat!") == "cat sat" and normalize_answer("an apple") == "apple"
    assert token_f1("x y y", "y y z") == pytest.approx(2 / 3)  # 2 shared tokens (with multiplicity): P = R = 2/3
    # "the cat sat" -> [cat, sat] vs "a cat sat on the mat" -> [cat, sat, on, mat]: P 1, R 1/2 -> F1 2/3 (best ref);
    # "Paris" == "paris." after normalisation; "" matches nothing
    r = load_metric("squad").compute(predictions=["the cat sat", "Paris", ""],
                                     references=[["dog", "a cat sat on the mat"], ["paris.", "in Paris"], ["x"]])
    assert r["exact_match"] == pytest.approx(1 / 3)
    assert r["f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def rows_dataset(rows):
    import datasets

    return datasets.Dataset.from_list(rows)


def test_clean_drops_and_counts_unusable_rows():
    from pipeline.tasks import qa_common

    ok = {"question": "Who?", "context": "Ann came.", "answers": {"text": ["Ann"], "answer_start": [0]}}
    d = rows_dataset([ok,
                      {**ok, "answers": {"text": ["Ann"], "answer_start": [2]}},    # text not at its start
                      {**ok, "answers": {"text": [], "answer_start": []}},          # unanswerable (SQuAD v2)
                      {**ok, "question": " "}, ok])
    kept, dropped = qa_common.clean("train", d)
    assert len(kept) == 2 and sum(dropped.values()) == 3 and len(dropped) == 3
    assert any("answer_start" in why for why in dropped) and any("unanswerable" in why for why in dropped)


def test_clean_refuses_malformed_rows_naming_the_row():
    from pipeline.errors import DataError
    from pipeline.tasks import qa_common

    ok = {"question": "Who?", "context": "Ann came.", "answers": {"text": ["Ann"], "answer_start": [0]}}
    bad = {**ok, "answers": {"text": ["Ann", "Ann came"], "answer_start": [0]}}
    with pytest.raises(DataError, match="row 1: answers has 2 texts but 1 answer_start") as e:
        qa_common.clean("validation", rows_dataset([ok, bad]))
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="squad schema"):
        qa_common.clean("train", rows_dataset([{"question": "q", "context": "c", "answers": "c"}]))


def test_generated_rows_locate_their_answers_and_hold_out_names():
    import random

    from pipeline.data import synthetic as gen
    from pipeline.tasks import qa_common

    rows = {s: [qa_common.synthetic_row(random.Random(s), s) for _ in range(200)] for s in ("train", "test")}
    for split_rows in rows.values():
        for r in split_rows:
            (text,), (start,) = r["answers"]["text"], r["answers"]["answer_start"]
            assert r["context"][start:start + len(text)] == text and r["question"].endswith("?")
    assert max(len(r["context"].split()) for r in rows["train"]) > 60  # some contexts need several windows
    held_out = set(gen.pool(gen.LOC, "test"))
    assert not any(loc in r["context"] for r in rows["train"] for loc in held_out)


def test_virtual_tokens_shift_positions_and_skip_logits():
    import torch

    from pipeline.tasks import task_class

    task = task_class("qa")(compose(["recipe=bert-qa", "debug=smoke"]))
    collate = task.virtual_tokens(lambda feats: {"start_positions": torch.tensor([0, 3]),
                                                 "end_positions": torch.tensor([0, 5])}, 4)
    batch = collate(None)
    assert batch["start_positions"].tolist() == [4, 7] and batch["end_positions"].tolist() == [4, 9]
    assert task.skip == 4


def test_peft_adapter_sees_token_type_ids():
    """peft drops token_type_ids in PeftModelForQuestionAnswering (non-prompt methods): with the task's hooks the
    LoRA model's outputs depend on them and equal the merged model's, which receives them directly."""
    import copy

    import torch
    import transformers

    from pipeline.models import methods
    from pipeline.families import get_family
    from pipeline.tasks import task_class
    from pipeline.tasks.qa import pass_token_types

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64)
    task = task_class("qa")(compose(["recipe=bert-qa", "debug=smoke"]))
    model = methods.apply(compose(["method=lora", "+method.init_lora_weights=false"]).method,
                          transformers.BertForQuestionAnswering(config), get_family("bert"), task).eval()
    ids = torch.randint(5, 50, (2, 10))
    types = torch.tensor([[0] * 4 + [1] * 6] * 2)
    merged = copy.deepcopy(model).merge_and_unload()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, token_type_ids=types).start_logits, model(input_ids=ids).start_logits)
        pass_token_types(model)
        hooked = model(input_ids=ids, token_type_ids=types).start_logits
        assert not torch.allclose(hooked, model(input_ids=ids).start_logits)
        torch.testing.assert_close(hooked, merged(input_ids=ids, token_type_ids=types).start_logits)


@pytest.mark.parametrize("overrides,task_name", [(["recipe=bert-qa", "model=gpt2"], "qa"),
                                                 (["recipe=t5-qa", "model=bert-base-cased"], "generative-qa")])
def test_family_that_cannot_do_the_task_is_refused_before_data(overrides, task_name):
    from pipeline.stages.check import validate
    from pipeline.errors import ModelError

    with pytest.raises(ModelError, match=f"cannot do task={task_name}; use ") as e:
        validate(compose([*overrides, "data=squad-local", "data.dir=/nonexistent"]))  # no data is read
    assert "\n" not in str(e.value)


def test_gpt2_qa_on_the_command_line_is_one_line_exit_2(tmp_path):
    from conftest import run_cli

    r = run_cli(["recipe=bert-qa", "model=gpt2", "debug=smoke", f"hydra.run.dir={tmp_path}/run"])
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "cannot do task=qa" in r.stderr and not (tmp_path / "run" / "metrics.json").exists()


def test_lora_qa_run_merges_and_predicts_like_the_adapter(tmp_path):
    """A LoRA run end to end: finetune-export --merge gives the adapter model's outputs, and finetune-predict (merged
    model, segment ids given to the model directly) answers like the evaluate stage's adapter model (segment ids
    handed on by the task's hooks)."""
    import json

    from omegaconf import OmegaConf

    from pipeline.models.saved import merge
    from pipeline.commands.predict import Predictor
    from pipeline.stages.run import run

    cfg = compose(["recipe=bert-qa", "debug=smoke", "method=lora", "trainer.num_train_epochs=1"])
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    metrics = run(cfg, tmp_path)
    assert metrics["trainable_params"] < metrics["total_params"] and 0 <= metrics["test_f1"] <= 1
    out, diff = merge(tmp_path)
    assert (out / "model.safetensors").is_file() and diff < 1e-4
    rows = [json.loads(l) for l in (tmp_path / "samples.jsonl").read_text().splitlines()]
    preds = Predictor(tmp_path).predict([{"question": r["question"], "context": r["context"]} for r in rows])
    for row, pred in zip(rows, preds):
        assert (pred["answer"], pred["start"], pred["end"]) == tuple(row["predicted"][k] for k in ("answer", "start",
                                                                                                    "end"))
        assert pred["score"] == pytest.approx(row["predicted"]["score"], abs=2e-4)


def test_hub_recipe_offline_fails_in_one_line(tmp_path):
    from conftest import run_cli

    r = run_cli(["recipe=bert-qa", "model=minilm-offline", f"hydra.run.dir={tmp_path}/run"])
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "data.path=rajpurkar/squad: cannot load the hub dataset" in r.stderr


@pytest.mark.slow
def test_two_process_qa_scores_its_questions_in_order(tmp_path):
    """2-process DDP (gloo on CPU): each rank scores half the windows; gathered back in dataset order, the
    per-question EM / F1 equal a 1-process evaluation of the same saved model."""
    import json

    from conftest import run_pipeline
    from test_distributed import launch

    out = launch(["-m", "pipeline", "recipe=bert-qa", "debug=smoke", "trainer.num_train_epochs=1", "num_samples=0",
                  f"hydra.run.dir={tmp_path / 'ddp'}"])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["world_size"] == 2
    one = run_pipeline(["recipe=bert-qa", "debug=smoke", "model.init=pretrained", "do_train=false", "num_samples=0",
                        f"model.name_or_path={tmp_path / 'ddp' / 'model'}"], tmp_path / "one")
    for key in ("eval_f1", "eval_exact_match", "test_f1", "test_exact_match"):
        assert one[key] == pytest.approx(ddp[key]), key
    assert ddp["eval_f1"] > 0


def test_question_longer_than_a_window_allows_is_cut_not_a_tokenizer_panic(tokenizer):
    """max_length 12, stride 3, 3 special tokens: a window keeps at most 12 - 3 - 3 - 1 = 5 question tokens (the fast
    tokenizer panics when the stride reaches the context's room). An 8-token question is cut to its first 5 tokens;
    the windows still cover the whole context."""
    from pipeline.tasks.qa_spans import fit_questions, windows

    long_q = "who who who who who who who ?"
    (cut_q,), (was_cut,) = fit_questions(tokenizer, [long_q], max_length=12, stride=3)
    assert was_cut and cut_q == "who who who who who"
    f = windows(tokenizer, [long_q], [CONTEXT], max_length=12, stride=3, token_types=True)
    assert all(len(ids) <= 12 and ids[1:6] == [tokenizer.convert_tokens_to_ids("who")] * 5 for ids in f["input_ids"])
    covered = {tuple(o) for offs in f["offset_mapping"] for o in offs if o is not None}
    assert len(covered) == len(CONTEXT.split())


def test_long_questions_of_real_files_are_cut_and_counted(tmp_path):
    """debug=smoke (64-token windows, stride 16) on SQuAD-schema files with 3 questions of ~60 words: the run ends,
    and metrics.json counts the 3 cut questions of the train split."""
    import json

    import random

    from conftest import run_pipeline
    from pipeline.tasks import qa_common

    rng = random.Random(0)
    for split, n in (("train", 48), ("validation", 8), ("test", 8)):
        rows = [qa_common.synthetic_row(rng, split) for _ in range(n)]
        if split == "train":
            for r in rows[:3]:
                r["question"] = " ".join(["which"] * 60) + " ?"
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = run_pipeline(["recipe=bert-qa", "debug=smoke", f"data.train_file={tmp_path / 'train.jsonl'}",
                      f"data.validation_file={tmp_path / 'validation.jsonl'}",
                      f"data.test_file={tmp_path / 'test.jsonl'}", "trainer.max_steps=2", "num_samples=0"],
                     tmp_path / "run")
    assert m["data_truncated"]["train"]["task.max_length"] == 3
