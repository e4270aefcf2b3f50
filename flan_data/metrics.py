"""Task metrics on predictions: accuracy, SQuAD-style exact match, ROUGE-L (F-measure).

Contract: `example_metric(metric, query, prediction)` gives one example's value in [0, 1]
(`prediction` is an option index for choice tasks, a string for generation); the task's metric
is the mean over its examples. ROUGE uses the maintained `rouge-score` package.
"""

from __future__ import annotations

import re
import string
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


def example_metric(metric: str, query: Query, prediction: int | str) -> float:
    if metric == "accuracy":
        if not isinstance(prediction, int):
            raise TypeError(f"accuracy needs an option index for {query.id}, got {prediction!r}")
        return float(prediction == query.gold)
    if metric == "exact_match":
        return exact_match(str(prediction), query.references)
    if metric == "rouge_l":
        return rouge_l(str(prediction), query.references)
    raise ValueError(f"unknown metric {metric!r}; expected accuracy, exact_match or rouge_l")
