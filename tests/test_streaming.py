"""data.streaming=true: the training rows as a stream (pipeline/data/streaming.py). A killed run resumed with
resume=auto ends exactly like a straight one (same batches: the Trainer replays the seeded stream and skips what it
trained); two DDP ranks read disjoint rows (split_dataset_by_node); without trainer.max_steps: one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHARED_DATA, compose, needs_shared_data, run_pipeline
from pipeline.errors import ConfigError

ALPACA = SHARED_DATA / "alpaca"
STREAM = ["recipe=gpt2-instruct", "debug=smoke", "data.streaming=true", f"data.train_file={ALPACA}/train.jsonl",
          "data.stream_head=200", "data.stream_batch=32", "data.stream_shuffle_buffer=64", "trainer.max_steps=10",
          "trainer.logging_steps=1", "trainer.eval_strategy=steps", "trainer.save_strategy=steps",
          "+trainer.eval_steps=4", "+trainer.save_steps=4", "num_samples=0"]
CRASH_AT = 6  # 2 steps after checkpoint-4: the resume replays the stream and skips 4 steps of batches


def test_streaming_without_max_steps_is_refused_in_one_line():
    from pipeline.stages import resolve

    with pytest.raises(ConfigError, match=r"^data.streaming=true reads a stream of unknown length: set "
                                          r"trainer.max_steps=<steps>") as e:
        resolve.resolve(compose(["recipe=gpt2-instruct", "debug=smoke", "data.streaming=true"]))
    assert "\n" not in str(e.value)


def _losses(run_dir: Path) -> list:
    return [(r["step"], r["loss"]) for r in json.loads((run_dir / "log_history.json").read_text()) if "loss" in r]


@needs_shared_data
@pytest.mark.shared_data
def test_killed_streaming_run_resumed_with_auto_equals_a_straight_run(tmp_path, monkeypatch):
    from transformers import TrainerCallback

    import pipeline.training.trainer as train

    straight = run_pipeline(STREAM, tmp_path / "straight")
    assert straight["data_streaming"]["held_out_from_head"] == ["validation", "test"]
    assert straight["train_samples"] == 10 * 16  # the rows trained: 10 steps of 16, not the head's rows

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == CRASH_AT:
                raise KeyboardInterrupt("crash")

    build = train.build_trainer

    def armed(*a, **kw):
        t = build(*a, **kw)
        t.add_callback(Crash())
        return t

    monkeypatch.setattr(train, "build_trainer", armed)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(STREAM, tmp_path / "crashed")
    monkeypatch.setattr(train, "build_trainer", build)
    resumed = run_pipeline(STREAM + ["resume=auto"], tmp_path / "crashed")
    # every step after the resume point trains on the same batch as the straight run: the same losses, bit for bit
    assert [x for x in _losses(tmp_path / "crashed") if x[0] > 4] == [x for x in _losses(tmp_path / "straight")
                                                                      if x[0] > 4]
    keys = [k for k in straight if k.startswith(("eval_", "test_")) and "runtime" not in k and "per_second" not in k]
    assert keys and {k: straight[k] for k in keys} == {k: resumed[k] for k in keys}


RANKS = """
import json, os, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from conftest import compose
from pipeline.stages import run
r = run.until(run.Run(cfg=compose(sys.argv[2:]), run_dir=__import__("pathlib").Path(sys.argv[1])), run.train_stage)
r.trainer = run.make_trainer(r)
rows = []
for i, batch in enumerate(r.trainer.get_train_dataloader()):
    rows += [tuple(x for x in row.tolist() if x != r.tokenizer.pad_token_id) for row in batch["input_ids"]]
    if i == 3:
        break
out = os.path.join(sys.argv[1], "rank%s.json" % os.environ["RANK"])
json.dump(rows, open(out, "w"))
"""


def test_two_ddp_ranks_read_disjoint_rows_of_the_stream(tmp_path):
    from test_distributed import launch

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"item {i} says {'good' if i % 2 else 'bad'} {i * 7}",
                                        "label": "pos" if i % 2 else "neg"}) + "\n" for i in range(600)))
    script = tmp_path / "ranks.py"
    script.write_text(RANKS.format(root=str(ROOT), tests=str(ROOT / "tests")))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    overrides = ["recipe=minilm-sst2", "debug=smoke", "data.streaming=true", f"data.train_file={data}",
                 "data.validation_file=null", "data.test_file=null", "data.stream_head=100", "data.stream_batch=16",
                 "data.max_train_samples=null", "trainer.max_steps=4", "trainer.global_batch_size=16",
                 "trainer.per_device_train_batch_size=8"]
    p = launch([str(script), str(run_dir), *overrides])
    assert p.returncode == 0, p.stderr[-3000:]
    r0 = {tuple(x) for x in json.loads((run_dir / "rank0.json").read_text())}
    r1 = {tuple(x) for x in json.loads((run_dir / "rank1.json").read_text())}
    assert len(r0) == len(r1) == 32  # 4 batches of 8 distinct rows each
    assert not r0 & r1


@needs_shared_data
@pytest.mark.shared_data
def test_streamed_mixture_interleaves_sources_with_the_weights_as_probabilities():
    from pipeline.data import load_data
    from pipeline.stages import resolve
    from pipeline.tasks import get_task

    overrides = ["recipe=gpt2-instruct", "debug=smoke", "task.format=auto", "data.streaming=true",
                 "trainer.max_steps=4", "data.stream_head=100", "data.max_train_samples=null",
                 f"data.mixture=[{{name: alpaca, format: instruction, train_file: {ALPACA}/train.jsonl, weight: 1}}, "
                 f"{{name: chat, format: messages, train_file: {ALPACA}/test.jsonl, weight: 3}}]"]

    def first_rows():
        cfg = resolve.resolve(compose(overrides))
        loaded = load_data(cfg.data, get_task(cfg), int(cfg.seed))
        assert loaded.mixture["strategy"] == "interleave" and loaded.mixture["rows"]["chat"]["train"] is None
        return [("messages" if r["messages"] else "instruction") for r, _ in zip(loaded.stream, range(200))]

    rows = first_rows()
    assert 30 <= rows.count("instruction") <= 70 and rows.count("messages") == 200 - rows.count("instruction")
    assert first_rows() == rows  # seeded


def test_a_streamed_label_the_head_lacks_is_one_line_naming_the_key(tmp_path):
    from pipeline.errors import DataError

    data = tmp_path / "late-label.jsonl"
    rows = [{"text": f"row {i} text", "label": "a" if i % 2 else "b"} for i in range(200)]
    rows += [{"text": f"row {i} late", "label": "c"} for i in range(200)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"^data.streaming: a streamed row has 'c' which the first data.stream_head "
                                        r"rows and the eval splits do not have"):
        run_pipeline(["recipe=minilm-sst2", "debug=smoke", "data.streaming=true", "data.stream_head=100",
                      "data.stream_shuffle_buffer=0", "data.max_train_samples=null", f"data.train_file={data}",
                      "data.validation_file=null", "data.test_file=null", "trainer.max_steps=30"], tmp_path / "run")
