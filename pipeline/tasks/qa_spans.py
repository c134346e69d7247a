"""Extractive QA's two halves around the model, as in the transformers ``run_qa.py`` example: contexts cut into
overlapping windows (features) with answer start / end token labels, and start / end logits turned back into the
best answer span of each question over all its windows. Pure functions of token ids, offsets and logits: the unit
tests check them against hand-computed values."""

from __future__ import annotations

import numpy as np


def fit_questions(tokenizer, questions: list[str], max_length: int, stride: int) -> tuple[list[str], list[bool]]:
    """(questions, which were cut): a question is cut at a token boundary where a window would leave its context
    fewer than ``stride`` + 1 tokens (fast tokenizers refuse such a window: "stride must be strictly less than
    max_len")."""
    room = max_length - stride - tokenizer.num_special_tokens_to_add(pair=True) - 1
    offsets = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cut = [len(o) > room for o in offsets]
    return [q[:o[room - 1][1]] if c else q for q, o, c in zip(questions, offsets, cut)], cut


def windows(tokenizer, questions: list[str], contexts: list[str], max_length: int, stride: int,
            answers: list[dict] | None = None, token_types: bool | None = None) -> dict:
    """Features of (question, context) pairs: the question once, the context in windows of ``max_length`` tokens
    overlapping by ``stride`` tokens (a question too long for that is cut: ``fit_questions``; ``question_cut`` is
    1 on the first window of such a question). Each feature keeps ``example_id`` (index of its pair) and
    ``offset_mapping``: character offsets of its context tokens, None for every other token (question, special tokens). With
    ``answers`` (SQuAD ``{"text": [...], "answer_start": [...]}``; the first answer is the training target), also
    ``start_positions`` / ``end_positions``: the answer's first and last token in the window, or the CLS token's
    index in both when the window does not hold the whole answer. ``token_types``: return segment ids (question 0,
    context 1) or not; None: what the tokenizer returns by default."""
    pad_right = tokenizer.padding_side == "right"  # question first; left-padding tokenizers put the context first
    questions = [q.lstrip() for q in questions]  # leading spaces only waste window room (as run_qa does)
    questions, cut = fit_questions(tokenizer, questions, max_length, stride)
    enc = tokenizer(questions if pad_right else contexts, contexts if pad_right else questions,
                    truncation="only_second" if pad_right else "only_first", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, return_token_type_ids=token_types,
                    padding=False)
    sample_map = enc.pop("overflow_to_sample_mapping")
    context_index = 1 if pad_right else 0
    features = {k: list(v) for k, v in enc.items() if k != "offset_mapping"}
    features.update(example_id=[], offset_mapping=[], question_cut=[])
    if answers is not None:
        features.update(start_positions=[], end_positions=[])
    for i, offsets in enumerate(enc["offset_mapping"]):
        seq = enc.sequence_ids(i)
        ctx = [k for k, s in enumerate(seq) if s == context_index]
        features["example_id"].append(int(sample_map[i]))
        features["question_cut"].append(int(cut[sample_map[i]] and (i == 0 or sample_map[i - 1] != sample_map[i])))
        features["offset_mapping"].append([list(o) if seq[k] == context_index else None
                                           for k, o in enumerate(offsets)])
        if answers is None:
            continue
        ids = enc["input_ids"][i]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        answer = answers[sample_map[i]]
        start_char = answer["answer_start"][0]
        end_char = start_char + len(answer["text"][0])
        first, last = ctx[0], ctx[-1]
        if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
            start = end = cls  # the answer is not (wholly) in this window
        else:
            start = first
            while start <= last and offsets[start][0] <= start_char:
                start += 1
            end = last
            while end >= first and offsets[end][1] >= end_char:
                end -= 1
            start, end = start - 1, end + 1
        features["start_positions"].append(start)
        features["end_positions"].append(end)
    return features


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def best_spans(contexts: list[str], example_ids, offsets, start_logits, end_logits, n_best: int,
               max_answer_length: int, skip: int = 0) -> list[dict]:
    """The best answer of each example: ``{"answer", "start", "end", "score"}`` with ``context[start:end] ==
    answer``. Candidates are the ``n_best`` highest start and end logits of every window; a span is valid when both
    ends are context tokens, end >= start and it has at most ``max_answer_length`` tokens; the best is the highest
    start + end logit over all windows of the example. ``score``: p(start) x p(end) of that span, softmax over the
    context tokens of its window. ``skip``: leading logit positions that are no input token (virtual tokens of
    prompt tuning). An example without a valid span gets an empty answer with score 0."""
    best = [None] * len(contexts)
    for f, ex in enumerate(example_ids):
        offs = offsets[f]
        n = len(offs)
        starts = np.asarray(start_logits[f][skip:skip + n], dtype=np.float64)
        ends = np.asarray(end_logits[f][skip:skip + n], dtype=np.float64)
        context = np.array([o is not None and o[0] >= 0 for o in offs])
        if not context.any():
            continue
        p_start, p_end = np.zeros(n), np.zeros(n)
        p_start[context], p_end[context] = _softmax(starts[context]), _softmax(ends[context])
        top_starts = np.argsort(starts)[::-1][:n_best]
        top_ends = np.argsort(ends)[::-1][:n_best]
        for s in top_starts:
            if not context[s]:
                continue
            for e in top_ends:
                if not context[e] or e < s or e - s + 1 > max_answer_length:
                    continue
                logit = starts[s] + ends[e]
                if best[ex] is None or logit > best[ex][0]:
                    best[ex] = (logit, int(offs[s][0]), int(offs[e][1]), float(p_start[s] * p_end[e]))
    out = []
    for ex, context in enumerate(contexts):
        if best[ex] is None:
            out.append({"answer": "", "start": 0, "end": 0, "score": 0.0})
        else:
            _, a, b, score = best[ex]
            out.append({"answer": context[a:b], "start": a, "end": b, "score": round(score, 4)})
    return out
