"""Hybrid retrieval (`serve.hybrid`): the mixing rule against hand-computed values, and the
mixed ranking at its two ends equal to the dense retriever's and BM25's own orders."""

from __future__ import annotations

import numpy as np
import pytest

from retriever import BM25Retriever
from serve.hybrid import WEIGHTS, HybridRetriever, mix, zscore
from uprise.evaluation.validation import choose_weight


def test_zscore_and_mix_against_hand_computed_values():
    dense = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    lexical = np.array([[0.0, 0.0, 6.0], [0.0, 3.0, 0.0]])
    s = np.sqrt(2.0 / 3.0)  # population sd of (1, 2, 3)
    np.testing.assert_allclose(zscore(dense), [[-1 / s, 0.0, 1 / s], [0.0, 0.0, 0.0]])
    z_lex = np.array([-1.0, -1.0, 2.0]) / np.sqrt(2.0)  # (0, 0, 6): mean 2, sd 2 * sqrt(2)
    np.testing.assert_allclose(zscore(lexical)[0], z_lex)
    np.testing.assert_allclose(mix(dense, lexical, 0.25)[0],
                               0.25 * np.array([-1 / s, 0.0, 1 / s]) + 0.75 * z_lex)
    np.testing.assert_allclose(mix(dense, lexical, 0.25)[1], 0.75 * zscore(lexical)[1])
    with pytest.raises(ValueError, match=r"hybrid weight 1.5.*\[0, 1\]"):
        mix(dense, lexical, 1.5)


def test_choose_weight_keeps_the_best_and_breaks_ties_towards_the_dense_retriever():
    assert choose_weight({0.0: 0.5, 0.3: 0.7, 1.0: 0.6}) == 0.3
    assert choose_weight({0.0: 0.7, 0.4: 0.7, 0.8: 0.7, 1.0: 0.6}) == 0.8
    with pytest.raises(ValueError, match="validation set is empty"):
        choose_weight({})
    assert WEIGHTS[0] == 0.0 and WEIGHTS[-1] == 1.0 and len(WEIGHTS) == 11


def test_bm25_scores_cover_the_pool_and_agree_with_retrieve(pool):
    bm25 = BM25Retriever(pool)
    queries = ["the dog ran in the field", "zzz qqq xyzzy"]
    scores = bm25.scores(queries)
    assert scores.shape == (2, len(pool))
    for (i, score), row in ((hit, scores[0]) for hit in bm25.retrieve(queries[:1], 3)[0]):
        assert row[i] == pytest.approx(score)
    assert not scores[1].any()  # no term in common: 0 everywhere


def test_the_two_ends_of_the_mix_are_the_dense_and_the_bm25_orders(prompt_retriever, pool):
    queries = ["the dog ran in the field", "which technology came last, radio or phone?"]
    dense = HybridRetriever(prompt_retriever, 1.0).retrieve_batch(queries, k=len(pool))
    plain = prompt_retriever.retrieve_batch(queries, k=len(pool))
    for mixed, exact in zip(dense, plain, strict=True):
        assert [h.id for h in mixed] == [h.id for h in exact]
        assert [h.rank for h in mixed] == list(range(1, len(pool) + 1))
    lexical = HybridRetriever(prompt_retriever, 0.0)
    scores = BM25Retriever(pool).scores(queries)
    for row, hits in enumerate(lexical.retrieve_batch(queries, k=2)):
        best = np.argsort(-scores[row], kind="stable")[:2]
        assert [h.id for h in hits] == [pool[i].id for i in best]
        np.testing.assert_allclose([h.score for h in hits],
                                   np.sort(zscore(scores[row:row + 1])[0])[::-1][:2])
    with pytest.raises(ValueError, match="hybrid weight -0.1"):
        HybridRetriever(prompt_retriever, -0.1)
