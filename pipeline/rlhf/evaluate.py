"""Before / after measurements of a policy on held-out data: sampled generations (scored by the reward model when
there is one), a sampled estimate of KL(policy || reference), and log-probabilities of held-out preference pairs.
Every rank computes the same numbers (the models are replicas); only the main process writes files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import PartialState

from pipeline.infra.distributed import is_main
from pipeline.tasks.chat_format import stop_ids


def _device():
    return PartialState().device


def truncate_prompts(prompts: list[str], tok, max_tokens: int) -> list[str]:
    """Keep the last ``max_tokens`` tokens of each prompt (the end of a dialogue is what the response answers)."""
    out = []
    for p in prompts:
        ids = tok(p, add_special_tokens=False)["input_ids"]
        out.append(p if len(ids) <= max_tokens else tok.decode(ids[-max_tokens:]))
    return out


def generate(model, tok, prompts: list[str], max_new_tokens: int, temperature: float, batch_size: int, seed: int):
    """Sampled completions: list of (prompt_ids, completion_ids up to and including the first stop token (the chat
    template's end of turn, EOS), completion text)."""
    stops = stop_ids(tok) if tok.chat_template else [tok.eos_token_id]
    model.eval()
    device = _device()
    model.to(device)
    side, tok.padding_side = tok.padding_side, "left"
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tok(prompts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            with torch.no_grad():
                seq = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                     top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id, eos_token_id=stops)
            width = enc["input_ids"].shape[1]
            for row, mask, new in zip(enc["input_ids"], enc["attention_mask"], seq[:, width:]):
                ids = new.tolist()
                end = next((k for k, t in enumerate(ids) if t in stops), None)
                ids = ids if end is None else ids[:end + 1]
                out.append((row[mask.bool()].tolist(), ids, tok.decode(ids, skip_special_tokens=True)))
    finally:
        tok.padding_side = side
    return out


def completion_logprobs(model, pairs_of_ids, batch_size: int = 16) -> list[float]:
    """Sum of log p(completion token | prefix) for each (prompt_ids, completion_ids)."""
    model.eval()
    device = _device()
    model.to(device)
    out = []
    for i in range(0, len(pairs_of_ids), batch_size):
        batch = pairs_of_ids[i:i + batch_size]
        seqs = [p + c for p, c in batch]
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        target = torch.zeros(len(seqs), width, dtype=torch.bool)
        for j, ((p, c), s) in enumerate(zip(batch, seqs)):
            ids[j, :len(s)] = torch.tensor(s)
            mask[j, :len(s)] = 1
            target[j, len(p):len(s)] = True
        ids, mask, target = ids.to(device), mask.to(device), target.to(device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        out += (logp * target[:, 1:]).sum(-1).tolist()
    return out


def pair_ids(tok, pairs, max_prompt_tokens: int, max_length: int):
    """Token ids of held-out pairs: (prompt, chosen) and (prompt, rejected), prompt cut from the left."""
    chosen, rejected = [], []
    for p, c, r in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"]):
        pid = tok(p, add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
        room = max(1, max_length - len(pid))
        chosen.append((pid, tok(c, add_special_tokens=False)["input_ids"][:room]))
        rejected.append((pid, tok(r, add_special_tokens=False)["input_ids"][:room]))
    return chosen, rejected


def preference(policy, ref, chosen_ids, rejected_ids, beta: float) -> dict:
    """Held-out preference accuracy of ``policy`` (log p(chosen) > log p(rejected)) and, against ``ref``, DPO's
    implicit reward margin beta * [(log pi/ref)(chosen) - (log pi/ref)(rejected)] and its accuracy."""
    pc, pr = completion_logprobs(policy, chosen_ids), completion_logprobs(policy, rejected_ids)
    n = len(pc)
    out = {"preference_accuracy": sum(c > r for c, r in zip(pc, pr)) / n,
           "logp_margin": sum(c - r for c, r in zip(pc, pr)) / n}
    if ref is not None:
        rc, rr = completion_logprobs(ref, chosen_ids), completion_logprobs(ref, rejected_ids)
        margins = [beta * ((a - b) - (c - d)) for a, b, c, d in zip(pc, rc, pr, rr)]
        out.update({"implicit_reward_margin": sum(margins) / n,
                    "implicit_reward_accuracy": sum(m > 0 for m in margins) / n})
    return out


def sample_and_score(policy, ref, tok, prompts, ecfg, temperature: float, seed: int, scorer=None):
    """Generations of ``policy`` on ``prompts``: mean reward (when ``scorer``), KL estimate to ``ref``, rows."""
    gens = generate(policy, tok, prompts, int(ecfg.max_new_tokens), temperature, int(ecfg.batch_size), seed)
    rows = [{"prompt": p, "completion": text} for p, (_, _, text) in zip(prompts, gens)]
    out = {"mean_completion_tokens": sum(len(c) for _, c, _ in gens) / len(gens)}
    if scorer is not None:
        rewards = scorer(prompts, [r["completion"] for r in rows])
        for row, value in zip(rows, rewards):
            row["reward"] = value
        out["mean_reward"] = sum(rewards) / len(rewards)
    if ref is not None:
        pairs = [(p, c) for p, c, _ in gens]
        kl = [a - b for a, b in zip(completion_logprobs(policy, pairs), completion_logprobs(ref, pairs))]
        out["kl_to_reference"] = sum(kl) / len(kl)
    return out, rows


def write_generations(path: Path, before: list[dict], after: list[dict]) -> None:
    """One line per held-out prompt: the completion (and reward) before and after the RLHF step."""
    if not is_main():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for b, a in zip(before, after):
            row = {"prompt": b["prompt"], "before": b["completion"], "after": a["completion"]}
            if "reward" in b:
                row.update(reward_before=b["reward"], reward_after=a["reward"])
            f.write(json.dumps(row) + "\n")
