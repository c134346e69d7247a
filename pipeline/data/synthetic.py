"""Deterministic generated datasets (no network): the quickstart's data and the tests' data.

Each task module generates its rows (``Task.synthetic_row(rng, split)``) from the word pools here. Train and
validation draw from the first part of every pool; test draws from the held-out rest (``pool(values, split)``), so
its names, places and sentence templates never occur in training and a test score measures generalisation (the
validation score shows that the model learned its training distribution). Every split has its own seeded
``random.Random``.
"""

from __future__ import annotations

import random

import datasets

FIRST = ["Angela", "John", "Maria", "Li", "Ahmed", "Sofia", "Pierre", "Yuki", "Carlos", "Anna", "David", "Fatima",
         "Ivan", "Grace", "Omar", "Elena", "Kofi", "Hannah", "Raj", "Lucia", "Tomas", "Amara", "Kenji", "Nadia",
         "Felix", "Ingrid", "Mateo", "Zara"]
LAST = ["Merkel", "Smith", "Garcia", "Wei", "Khan", "Rossi", "Dubois", "Tanaka", "Silva", "Novak", "Brown",
        "Haddad", "Petrov", "Kim", "Farouk", "Costa", "Mensah", "Schmidt", "Patel", "Moreno", "Lindqvist", "Okafor",
        "Horvat", "Nakamura", "Ferreira", "Jensen", "Abbasi", "Kowalski"]
ORG = ["Siemens", "United Nations", "Acme Corp", "Red Cross", "Bank of Tokyo", "Reuters", "World Bank",
       "Nordic Steel", "Apex Airlines", "Green Energy Group", "Boston Celtics", "Real Madrid", "Toyota", "UNESCO",
       "Delta Mining", "Blue River Bank", "Orion Telecom", "Ajax"]
LOC = ["Paris", "New York", "Berlin", "Lake Geneva", "Tokyo", "Cairo", "Buenos Aires", "Lagos", "Oslo", "Madrid",
       "South Africa", "Brazil", "Mount Kenya", "Sydney", "Lima", "Vienna", "Helsinki", "Nairobi", "Chile",
       "Lisbon", "Seoul"]
MISC = ["German", "Olympic", "Nobel Prize", "English", "French", "World Cup", "Japanese", "Christmas", "Brazilian",
        "Davis Cup", "Swiss", "Euro 2024", "Italian", "Tour de France", "Korean"]
ADJ = ["small", "old", "quiet", "bright", "lazy", "clever", "brave", "tired"]
ANIMAL = ["fox", "dog", "cat", "horse", "owl", "rabbit", "bear", "crow"]
VERB = ["watches", "follows", "finds", "chases", "ignores", "greets"]
THING = ["river", "garden", "stone", "house", "tree", "road", "hill", "boat"]
PLACE = ["cafe", "library", "station", "park", "office", "museum", "cinema", "market"]
DAY = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIME = ["9 am", "10 am", "noon", "2 pm", "4 pm", "6 pm", "8 pm"]
ITEM = ["a book", "some coffee", "the tickets", "a cake", "the keys", "a map", "flowers", "the report"]
HELD_OUT = 0.3  # share of every pool kept for the test split


def pool(values: list, split: str) -> list:
    """The part of ``values`` a split draws from: train / validation the first 70%, test the held-out rest."""
    cut = max(1, round(len(values) * (1 - HELD_OUT)))
    return values[cut:] or values[-1:] if split == "test" else values[:cut]


def name(rng, split: str) -> str:
    return f"{rng.choice(pool(FIRST, split))} {rng.choice(pool(LAST, split))}"


def generate(task, sizes, seed: int):
    """DatasetDict with train / validation / test rows of ``task.synthetic_row``; identical for the same seed and
    sizes."""
    splits = {}
    for split in ("train", "validation", "test"):
        rng = random.Random(f"{task.name}-{seed}-{split}")
        rows = [task.synthetic_row(rng, split) for _ in range(int(sizes[f"num_{split}"]))]
        # from_generator writes an Arrow file in the datasets cache keyed by the rows, so the later tokenising `map`
        # is cached on disk too: a second run with the same tokenizer skips it (maps of in-memory datasets are not).
        splits[split] = datasets.Dataset.from_generator(_rows, gen_kwargs={"rows": rows})
    return datasets.DatasetDict(splits)


def _rows(rows: list):
    yield from rows
