"""Each shipped metric module against values computed by hand."""

import math

import pytest

from pipeline.metrics import load_metric


def test_seqeval_entity_level():
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    preds = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O"]]
    r = load_metric("seqeval").compute(predictions=preds, references=refs)
    # 3 gold entities, 2 predicted, 2 correct -> P=1, R=2/3, F1=0.8; tokens: 5 of 6 right
    assert r["overall_precision"] == pytest.approx(1.0)
    assert r["overall_recall"] == pytest.approx(2 / 3)
    assert r["overall_f1"] == pytest.approx(0.8)
    assert r["overall_accuracy"] == pytest.approx(5 / 6)
    assert r["LOC"]["f1"] == 0 and r["PER"]["number"] == 1


def test_rouge_by_hand():
    r = load_metric("rouge").compute(predictions=["the cat sat"], references=["the cat sat down"])
    # unigrams: P=3/3, R=3/4 -> F=6/7; bigrams: 2/2, 2/3 -> 0.8; LCS 3 -> same as rouge1
    assert r["rouge1"] == pytest.approx(6 / 7)
    assert r["rouge2"] == pytest.approx(0.8)
    assert r["rougeL"] == pytest.approx(6 / 7) and r["rougeLsum"] == pytest.approx(6 / 7)


def test_rouge_mean_over_examples():
    r = load_metric("rouge").compute(predictions=["a b", "x"], references=["a b", "y"])
    assert r["rouge1"] == pytest.approx(0.5)


def test_perplexity_is_exp_of_weighted_mean_nll():
    r = load_metric("perplexity").compute(losses=[1.0, 2.0], weights=[1, 3])
    assert r["mean_nll"] == pytest.approx(1.75)
    assert r["perplexity"] == pytest.approx(math.exp(1.75))
