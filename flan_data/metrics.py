"""Task metrics on predictions: accuracy, SQuAD-style exact match and token F1, ROUGE-L.

Contract: `example_metric(metric, query, prediction)` gives one example's value in [0, 1]
(`prediction` is an option index for choice tasks, a string for generation); the task's metric
is the mean over its examples. ROUGE uses the maintained `rouge-score` package.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

from flan_data.schema import Query

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: list[str]) -> float:
    return max(_rouge().score(ref, prediction)["rougeL"].fmeasure for ref in references)


def exact_match(prediction: str, references: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(r) for r in references))


def token_f1(prediction: str, references: list[str]) -> float:
    """SQuAD token F1 on normalised answers, the best over the references."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for ref in references:
        gold = normalize_answer(ref).split()
        common = Counter(pred) & Counter(gold)
        overlap = sum(common.values())
        if not pred or not gold:
            best = max(best, float(pred == gold))
        elif overlap:
            precision, recall = overlap / len(pred), overlap / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


METRICS = ("accuracy", "exact_match", "f1", "rouge_l")

PAPER_METRICS = {"mrpc": "acc_and_f1", "multirc": "f1"}
"""Tasks that UPRISE (microsoft/LMOps `uprise/DPR/dpr/utils/tasks.py`) scores with a corpus-level
metric instead of accuracy: binary F1 of the positive class (option 1, "yes"), alone ("f1") or
averaged with accuracy ("acc_and_f1", the GLUE convention). See `corpus_metric`."""


def corpus_metric(metric: str, golds: list[int], predictions: list[int]) -> float:
    """A choice task's corpus-level `PAPER_METRICS` value from gold and predicted option ids."""
    if len(golds) != len(predictions) or not golds:
        raise ValueError(f"need equal, non-empty gold/prediction lists ({len(golds)}, "
                         f"{len(predictions)})")
    tp = sum(g == 1 and p == 1 for g, p in zip(golds, predictions, strict=True))
    positives, predicted = golds.count(1), predictions.count(1)
    f1 = 2 * tp / (positives + predicted) if positives + predicted else 0.0
    if metric == "f1":
        return f1
    if metric == "acc_and_f1":
        accuracy = sum(g == p for g, p in zip(golds, predictions, strict=True)) / len(golds)
        return (accuracy + f1) / 2
    raise ValueError(f"unknown corpus metric {metric!r}; expected 'f1' or 'acc_and_f1'")


def example_metric(metric: str, query: Query, prediction: int | str) -> float:
    if metric == "accuracy":
        if not isinstance(prediction, int):
            raise TypeError(f"accuracy needs an option index for {query.id}, got {prediction!r}")
        return float(prediction == query.gold)
    if metric == "exact_match":
        return exact_match(str(prediction), query.references)
    if metric == "f1":
        return token_f1(str(prediction), query.references)
    if metric == "rouge_l":
        return rouge_l(str(prediction), query.references)
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
