"""Deterministic generated datasets (no network): the quickstart's data and the tests' data.

Each generator draws from a seeded ``random.Random``; train / validation / test use disjoint seeds, and test
sentences mix first and last names into combinations the training split has rarely seen.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

FIRST = ["Angela", "John", "Maria", "Li", "Ahmed", "Sofia", "Pierre", "Yuki", "Carlos", "Anna", "David", "Fatima",
         "Ivan", "Grace", "Omar", "Elena", "Kofi", "Hannah", "Raj", "Lucia"]
LAST = ["Merkel", "Smith", "Garcia", "Wei", "Khan", "Rossi", "Dubois", "Tanaka", "Silva", "Novak", "Brown",
        "Haddad", "Petrov", "Kim", "Farouk", "Costa", "Mensah", "Schmidt", "Patel", "Moreno"]
ORG = ["Siemens", "United Nations", "Acme Corp", "Red Cross", "Bank of Tokyo", "Reuters", "World Bank",
       "Nordic Steel", "Apex Airlines", "Green Energy Group", "Boston Celtics", "Real Madrid", "Toyota", "UNESCO"]
LOC = ["Paris", "New York", "Berlin", "Lake Geneva", "Tokyo", "Cairo", "Buenos Aires", "Lagos", "Oslo", "Madrid",
       "South Africa", "Brazil", "Mount Kenya", "Sydney", "Lima", "Vienna"]
MISC = ["German", "Olympic", "Nobel Prize", "English", "French", "World Cup", "Japanese", "Christmas", "Brazilian",
        "Davis Cup", "Swiss", "Euro 2024"]
NER_TEMPLATES = [
    "{PER} visited {LOC} on Monday .", "{ORG} hired {PER} as chief executive .",
    "The {MISC} delegation met {PER} in {LOC} .", "{PER} said {ORG} would open an office in {LOC} .",
    "Shares of {ORG} fell 3 percent in {LOC} trading .", "{PER} won the {MISC} title after beating {PER} .",
    "Officials in {LOC} confirmed that {ORG} had signed the deal .", "{PER} , a spokesman for {ORG} , declined to comment .",
    "Police in {LOC} arrested two men on Tuesday .", "The {MISC} team arrived in {LOC} late on Sunday .",
    "{ORG} and {ORG} agreed to merge , {PER} told reporters .", "Rain stopped play in {LOC} .",
    "{PER} will fly to {LOC} next week to meet {PER} .", "The results were published by {ORG} in {LOC} .",
    "It was the first {MISC} victory for {PER} since 1998 .", "Nothing else happened on the day .",
]
ADJ = ["small", "old", "quiet", "bright", "lazy", "clever", "brave", "tired"]
ANIMAL = ["fox", "dog", "cat", "horse", "owl", "rabbit", "bear", "crow"]
VERB = ["watches", "follows", "finds", "chases", "ignores", "greets"]
THING = ["river", "garden", "stone", "house", "tree", "road", "hill", "boat"]
PLACE = ["cafe", "library", "station", "park", "office", "museum", "cinema", "market"]
DAY = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIME = ["9 am", "10 am", "noon", "2 pm", "4 pm", "6 pm", "8 pm"]
ITEM = ["a book", "some coffee", "the tickets", "a cake", "the keys", "a map", "flowers", "the report"]


def _name(rng):
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def ner_example(rng) -> dict:
    tokens, tags = [], []
    for word in rng.choice(NER_TEMPLATES).split():
        if word.startswith("{") and word.endswith("}"):
            kind = word[1:-1]
            pool = {"ORG": ORG, "LOC": LOC, "MISC": MISC}.get(kind)
            words = (_name(rng) if pool is None else rng.choice(pool)).split()
            tokens += words
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        else:
            tokens.append(word)
            tags.append("O")
    return {"tokens": tokens, "tags": tags}


def story_example(rng) -> dict:
    sents = []
    for _ in range(rng.randint(3, 6)):
        a, v, t = rng.choice(ANIMAL), rng.choice(VERB), rng.choice(THING)
        sents.append(f"The {rng.choice(ADJ)} {a} {v} the {t} near the {rng.choice(THING)}.")
    return {"text": " ".join(sents)}


def dialogue_example(rng) -> dict:
    name, place, day, time, item = _name(rng), rng.choice(PLACE), rng.choice(DAY), rng.choice(TIME), rng.choice(ITEM)
    doc = (f"#Person1#: Hi {name}, shall we meet at the {place} on {day}? "
           f"#Person2#: Sure. Is {time} fine? #Person1#: Perfect. Please bring {item}. #Person2#: Will do, see you.")
    return {"document": doc, "summary": f"{name} will meet #Person1# at the {place} on {day} at {time} and bring {item}."}


GENERATORS = {"ner": ner_example, "generation": story_example, "summarization": dialogue_example}


def generate(task_name: str, sizes, seed: int):
    """DatasetDict with train / validation / test for ``task_name``; identical for the same seed and sizes."""
    import datasets

    splits = {}
    for split in ("train", "validation", "test"):
        # from_generator writes an Arrow file in the datasets cache (keyed by these arguments), so the later
        # tokenising `map` is cached on disk too: a second run with the same tokenizer skips it. (from_list would
        # be in memory, and maps of in-memory datasets are never cached.)
        # "source": functions of an importable module are hashed by name, so an edit of this file must change the key
        splits[split] = datasets.Dataset.from_generator(
            _rows, gen_kwargs={"task_name": task_name, "seed": seed, "split": split, "n": int(sizes[f"num_{split}"]),
                               "source": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]})
    return datasets.DatasetDict(splits)


def _rows(task_name: str, seed: int, split: str, n: int, source: str = ""):
    make, rng = GENERATORS[task_name], random.Random(f"{task_name}-{seed}-{split}")
    for _ in range(n):
        yield make(rng)
