"""finetune-inspect: the rows as the model receives them, checked token by token against the labels the task
made; plain when piped, JSON for tools, no model weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

CHAT = {"messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Name a colour."},
                     {"role": "assistant", "content": "Blue."},
                     {"role": "user", "content": "Another?"},
                     {"role": "assistant", "content": "Green, like grass."}]}


def chat_overrides(tmp_path):
    f = tmp_path / "chat.jsonl"
    f.write_text("".join(json.dumps(CHAT) + "\n" for _ in range(4)))
    return ["recipe=gpt2-instruct", "debug=smoke", "task.format=messages", "task.packing=false",
            "task.block_size=128",
            f"data.train_file={f}", f"data.validation_file={f}", f"data.test_file={f}"]


def test_chat_row_tokens_carry_loss_exactly_on_the_assistant_turns_and_their_end_token(tmp_path):
    from pipeline.commands.inspect import inspect

    report = inspect(chat_overrides(tmp_path), n=1)
    row = report["rows"][0]
    tokens = row["tokens"]
    # token by token: loss is where the label is not -100; the label of a trained token is the token itself
    assert all(t["loss"] == (t["label"] != -100) for t in tokens)
    assert all(t["label"] == t["id"] for t in tokens if t["loss"])
    # the decoded tokens are the chat template's rendering of the raw row
    assert "".join(t["text"] for t in tokens) == report["chat_template"][0]
    # the loss-carrying spans are the two assistant answers, each with the end-of-turn token
    spans, cur = [], ""
    for t in tokens:
        if t["loss"]:
            cur += t["text"]
        elif cur:
            spans.append(cur)
            cur = ""
    spans += [cur] if cur else []
    assert spans == ["Blue.<|im_end|>", "Green, like grass.<|im_end|>"]
    assert row["trained_tokens"] == sum(t["loss"] for t in tokens) and row["examples"] == 1


def test_cli_is_plain_when_piped_and_json_for_tools(tmp_path):
    env_path = str(ROOT)
    plain = subprocess.run([sys.executable, "-m", "pipeline.commands.inspect", *chat_overrides(tmp_path), "--n", "1"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": env_path})
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "\x1b[" not in plain.stdout  # no colour codes into a pipe
    assert "]][[<|im_end|>]]" in plain.stdout and "-- row 0:" in plain.stdout
    # WANDB_MODE=offline: transformers prints a line on stdout at import then; --json's stdout must stay JSON
    js = subprocess.run([sys.executable, "-m", "pipeline.commands.inspect", *chat_overrides(tmp_path), "--n", "1",
                         "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": env_path, "WANDB_MODE": "offline"})
    assert js.returncode == 0, js.stderr[-2000:]
    report = json.loads(js.stdout)
    assert report["task"] == "generation" and report["rows"][0]["trained_tokens"] > 0
