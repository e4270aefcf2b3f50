"""Non-neural retrieval baselines: random prompts and BM25 (the `bm25s` package).

Contract: every retriever here follows `Retriever`: `retrieve(queries, k)` returns, per query,
up to k `(prompt_index, score)` pairs, best first, where `prompt_index` is a row of the pool
given at construction. The untrained dense baseline is not here: it is an export of a freshly
initialised `BiEncoder` (`retriever.export_retriever`), served like the trained one.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from flan_data.schema import Prompt

Hit = tuple[int, float]


class Retriever(Protocol):
    def retrieve(self, queries: list[str], k: int) -> list[list[Hit]]: ...


def _texts(pool: Sequence[Prompt] | Sequence[str]) -> list[str]:
    texts = [p if isinstance(p, str) else p.text for p in pool]
    if not texts:
        raise ValueError("the pool is empty; pass at least one prompt.")
    return texts


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k={k}; expected a positive integer.")


class RandomRetriever:
    """k distinct pool prompts per query, sampled afresh per query.

    The sample is seeded by `(seed, query text)` through sha256, so the same query always gets
    the same prompts (across processes too), and different queries get independent samples.
    Scores are 0.0.
    """

    def __init__(self, pool: Sequence[Prompt] | Sequence[str], seed: int = 0) -> None:
        self.n = len(_texts(pool))
        self.seed = seed

    def retrieve(self, queries: list[str], k: int) -> list[list[Hit]]:
        _check_k(k)
        out = []
        for query in queries:
            digest = hashlib.sha256(f"{self.seed}\0{query}".encode()).digest()
            rng = random.Random(int.from_bytes(digest[:8], "big"))
            out.append([(i, 0.0) for i in rng.sample(range(self.n), min(k, self.n))])
        return out


class BM25Retriever:
    """Lexical baseline: BM25 (Lucene variant, English stopwords removed) over the pool texts."""

    def __init__(self, pool: Sequence[Prompt] | Sequence[str]) -> None:
        import bm25s

        texts = _texts(pool)
        self.n = len(texts)
        self._bm25 = bm25s.BM25()
        self._bm25.index(bm25s.tokenize(texts, stopwords="en", show_progress=False),
                         show_progress=False)

    def retrieve(self, queries: list[str], k: int) -> list[list[Hit]]:
        _check_k(k)
        if not queries:
            return []
        tokens = self._tokens(queries)
        ids, scores = self._bm25.retrieve(tokens, k=min(k, self.n), show_progress=False,
                                          n_threads=1)  # (n_queries, k) each
        return [[(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True)]
                for row_ids, row_scores in zip(ids, scores, strict=True)]

    def scores(self, queries: list[str]) -> np.ndarray:
        """The BM25 score of every pool prompt for every query -> (n_queries, n_pool) float32
        (0 where a prompt shares no term with the query)."""
        out = np.zeros((len(queries), self.n), dtype=np.float32)  # (n_queries, n_pool)
        for row, tokens in enumerate(self._tokens(queries) if queries else []):
            out[row] = self._bm25.get_scores(tokens)
        return out

    @staticmethod
    def _tokens(queries: list[str]) -> list[list[str]]:
        import bm25s

        return bm25s.tokenize(list(queries), stopwords="en", return_ids=False,
                              show_progress=False)
