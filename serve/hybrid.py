"""Hybrid retrieval: a trained retriever's relevance mixed with BM25's.

Contract: `HybridRetriever(prompt_retriever, weight)` ranks every pool prompt of a loaded
`PromptRetriever` by `weight * z(dense) + (1 - weight) * z(bm25)`, where `z` standardises one
query's scores over the whole pool (mean 0, sd 1; scores that are all equal, such as BM25 for a
query sharing no term with the pool, become 0). Weight 1 is the dense retriever's order, 0 is
BM25's. `relevance(queries)` gives the (n_queries, n_pool) mixed scores, `retrieve_batch` the
top k as `RetrievedPrompt`s, best first, `score` the mixed relevance. Exact over the pool
(O(n_pool) per query): meant for evaluation-sized pools, not for the FAISS serving path. The
weight is chosen on the training run's validation queries (`uprise.evaluation.hybrid`), never
on evaluation data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from serve.prompt_retriever import RetrievedPrompt

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))
"""The weights `uprise eval` compares when it chooses one: 0 (BM25) to 1 (dense), step 0.1."""


def zscore(scores: np.ndarray) -> np.ndarray:
    """Each row standardised to mean 0, sd 1; a constant row becomes 0. (n, m) -> (n, m)."""
    scores = np.asarray(scores, dtype=np.float64)
    sd = scores.std(axis=1, keepdims=True)  # (n, 1)
    centred = scores - scores.mean(axis=1, keepdims=True)  # (n, m)
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 0)


def check_weight(weight: float) -> float:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"hybrid weight {weight!r}; expected a number in [0, 1] "
                         "(1 = the dense retriever alone, 0 = BM25 alone).")
    return float(weight)


def mix(dense: np.ndarray, lexical: np.ndarray, weight: float) -> np.ndarray:
    """`weight * z(dense) + (1 - weight) * z(lexical)`, both (n_queries, n_pool)."""
    check_weight(weight)
    return weight * zscore(dense) + (1.0 - weight) * zscore(lexical)


class HybridRetriever:
    """A loaded `PromptRetriever` and BM25 over its pool, mixed with `weight` (module doc)."""

    def __init__(self, prompt_retriever: Any, weight: float) -> None:
        from retriever import BM25Retriever

        self.weight = check_weight(weight)
        self.dense = prompt_retriever
        self.prompts = prompt_retriever.prompts
        self._bm25 = BM25Retriever(self.prompts)
        self._vectors = prompt_retriever.prompt_vectors(np.arange(len(self.prompts)))

    def parts(self, queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(dense, BM25) scores of every pool prompt, each (n_queries, n_pool), unmixed."""
        dense = self.dense.encode_queries(list(queries)) @ self._vectors.T  # (n_q, n_pool)
        return dense, self._bm25.scores(list(queries))

    def relevance(self, queries: Sequence[str]) -> np.ndarray:
        """Mixed relevance of every pool prompt -> (n_queries, n_pool)."""
        return mix(*self.parts(queries), self.weight)

    def retrieve_batch(self, queries: Sequence[str], k: int = 3) -> list[list[RetrievedPrompt]]:
        """The k most relevant pool prompts per query, best first (ties: lower pool row)."""
        if k < 1:
            raise ValueError(f"k={k}; expected a positive integer.")
        if not queries:
            return []
        rows = []
        for scores in self.relevance(queries):
            top = np.argsort(-scores, kind="stable")[:k]
            rows.append([RetrievedPrompt(id=p.id, text=p.text, task=p.task, cluster=p.cluster,
                                         score=float(scores[i]), rank=rank)
                         for rank, (i, p) in enumerate(((i, self.prompts[i]) for i in top), 1)])
        return rows
