"""What the two question-answering tasks (extractive ``qa.py``, ``generative_qa.py``) share: SQuAD-schema rows
(their checks and generated data), references for SQuAD exact match / F1, and per-split metrics.

Rows: ``{question, context, answers: {text: [...], answer_start: [...]}}`` (the Hugging Face ``squad`` schema; ids
and titles are not needed). Every reference answer counts for the metrics (the best one per question); the first
is the training target. Unanswerable questions (SQuAD v2's empty ``answers``) are dropped and counted: these tasks
always answer.
"""

from __future__ import annotations

from pipeline.data import synthetic as gen
from pipeline.errors import DataError
from pipeline.metrics import load_metric

COLUMNS = ("question", "context", "answers")
INPUT_ALIASES = {"question": ("text", "query"), "context": ("passage", "document")}

# Facts of generated contexts: (sentence, [(question, slot the answer is)]). test draws the held-out last 30%.
FACTS = [
    ("{PER} visited {LOC} on {DAY}.", [("Who visited {LOC}?", "PER"), ("Where did {PER} go on {DAY}?", "LOC"),
                                        ("When did {PER} visit {LOC}?", "DAY")]),
    ("{ORG} hired {PER} in {LOC}.", [("Who did {ORG} hire?", "PER"), ("Which company hired {PER}?", "ORG"),
                                     ("Where did {ORG} hire {PER}?", "LOC")]),
    ("{PER} bought {ITEM} at the {PLACE} on {DAY}.", [("What did {PER} buy?", "ITEM"),
                                                      ("Who bought {ITEM}?", "PER"),
                                                      ("Where did {PER} buy {ITEM}?", "PLACE")]),
    ("{ORG} opened an office in {LOC} at {TIME}.", [("Where did {ORG} open an office?", "LOC"),
                                                    ("Which company opened an office in {LOC}?", "ORG"),
                                                    ("When did {ORG} open an office?", "TIME")]),
    ("{PER} met the {MISC} delegation at the {PLACE}.", [("Who met the {MISC} delegation?", "PER"),
                                                         ("Where did {PER} meet the delegation?", "PLACE")]),
    ("On {DAY}, {PER} flew to {LOC} with {ORG}.", [("Who flew to {LOC}?", "PER"),
                                                    ("Which airline did {PER} fly with?", "ORG")]),
    ("{PER} will speak in {LOC} at {TIME} on {DAY}.", [("Who will speak in {LOC}?", "PER"),
                                                       ("Where will {PER} speak?", "LOC")]),
]


def _filler(rng) -> str:
    return (f"The {rng.choice(gen.ADJ)} {rng.choice(gen.ANIMAL)} {rng.choice(gen.VERB)} the "
            f"{rng.choice(gen.THING)} near the {rng.choice(gen.THING)}.")


def synthetic_row(rng, split: str) -> dict:
    """One fact among sentences without entities, a question about it, the answer located by character offset.
    One context in five has 6-10 other sentences: several windows at smoke sizes."""
    sentence, questions = rng.choice(gen.pool(FACTS, split))
    values = {"PER": gen.name(rng, split), "LOC": rng.choice(gen.pool(gen.LOC, split)),
              "ORG": rng.choice(gen.pool(gen.ORG, split)), "MISC": rng.choice(gen.pool(gen.MISC, split)),
              "DAY": rng.choice(gen.pool(gen.DAY, split)), "TIME": rng.choice(gen.pool(gen.TIME, split)),
              "PLACE": rng.choice(gen.pool(gen.PLACE, split)), "ITEM": rng.choice(gen.pool(gen.ITEM, split))}
    question, slot = rng.choice(questions)
    others = [_filler(rng) for _ in range(rng.randint(6, 10) if rng.random() < 0.2 else rng.randint(0, 3))]
    before = others[:rng.randint(0, len(others))]
    prefix = " ".join(before + [sentence[:sentence.index("{" + slot + "}")].format(**values)])
    if not before:
        prefix = prefix.lstrip()
    context = " ".join(before + [sentence.format(**values)] + others[len(before):])
    answer = values[slot]
    assert context[len(prefix):len(prefix) + len(answer)] == answer
    return {"question": question.format(**values), "context": context,
            "answers": {"text": [answer], "answer_start": [len(prefix)]}}


def clean(split: str, d):
    """Malformed rows (answers not in the squad schema, texts and starts of different lengths) are an error naming
    the row; rows without a question or context, unanswerable rows (no answer) and rows whose answer text is not at
    its ``answer_start`` in the context are dropped and counted."""
    feature = d.features.get("answers")
    if not (isinstance(feature, dict) and {"text", "answer_start"} <= set(feature)):
        raise DataError(f"split '{split}' column 'answers' is {feature}; it must be {{text: [str], answer_start: "
                        f"[int]}} per row (the Hugging Face squad schema); convert the file or map "
                        f"data.columns.answers=<column>")
    keep, dropped = [], {}
    for i, (q, c, a) in enumerate(zip(d["question"], d["context"], d["answers"])):
        texts, starts = a.get("text") or [], a.get("answer_start") or []
        if len(texts) != len(starts):
            raise DataError(f"split '{split}' row {i}: answers has {len(texts)} texts but {len(starts)} "
                            f"answer_start values; give one start per answer text")
        if not (isinstance(q, str) and q.strip() and isinstance(c, str) and c.strip()):
            why = "empty question or context"
        elif not texts:
            why = "unanswerable (no answer; SQuAD v2-style rows are not supported)"
        elif not all(isinstance(s, int) and isinstance(t, str) and t and c[s:s + len(t)] == t
                     for t, s in zip(texts, starts)):
            why = "answer text not found at its answer_start in the context"
        else:
            keep.append(i)
            continue
        dropped[why] = dropped.get(why, 0) + 1
    return (d.select(keep) if dropped else d), dropped


def references(raw_split) -> list[list[str]]:
    """Every gold answer text of every question (SQuAD scores take the best match)."""
    return [list(a["text"]) for a in raw_split["answers"]]


def squad_scores(predictions: list[str], refs: list[list[str]]) -> dict:
    return load_metric("squad").compute(predictions=predictions, references=refs)


def evaluate_with(trainer, compute, dataset, prefix: str) -> dict:
    """``trainer.evaluate`` on ``dataset`` with the ``compute_metrics`` of that split (the trainer's own is bound to
    the validation split it selects checkpoints by)."""
    saved = trainer.compute_metrics
    trainer.compute_metrics = compute
    try:
        return trainer.evaluate(eval_dataset=dataset, metric_key_prefix=prefix)
    finally:
        trainer.compute_metrics = saved


class SplitsKept:
    """Mixin: the task keeps each split's raw rows and features (``self.splits``, set by ``preprocess``) for the
    per-example metrics; they are no part of the task's pickled state (datasets' cache keys)."""

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("splits", None)
        return state
