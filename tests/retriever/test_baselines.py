"""Random and BM25 baselines: deterministic, well-formed, sensible."""

from __future__ import annotations

import pytest

from retriever.baselines import BM25Retriever, RandomRetriever

QUERIES = ["the cat sat on the mat", "which came last, radio or phone?", "the"]


def test_random_is_deterministic_per_query_and_seed(make_pool):
    pool = make_pool(20)
    a = RandomRetriever(pool, seed=3).retrieve(QUERIES, k=4)
    assert a == RandomRetriever(pool, seed=3).retrieve(QUERIES, k=4)
    assert a[0] == RandomRetriever(pool, seed=3).retrieve([QUERIES[0]], k=4)[0]  # order-free
    assert a != RandomRetriever(pool, seed=4).retrieve(QUERIES, k=4)
    assert a[0] != a[1]  # a fresh sample per query
    for row in a:
        assert len({i for i, _ in row}) == 4 and all(0 <= i < 20 for i, _ in row)
    assert len(RandomRetriever(pool[:2]).retrieve(["x"], k=5)[0]) == 2


def test_bm25_ranks_lexical_matches_first_and_is_deterministic():
    pool = ["the cat sat on the mat", "a dog barked at the radio", "phone came after radio",
            "premise and hypothesis"]
    bm25 = BM25Retriever(pool)
    hits = bm25.retrieve(QUERIES, k=2)
    assert hits == BM25Retriever(pool).retrieve(QUERIES, k=2)
    assert hits[0][0][0] == 0 and hits[1][0][0] == 2
    assert all(len(row) == 2 for row in hits)
    assert hits[0][0][1] >= hits[0][1][1]
    assert len(bm25.retrieve(["cat"], k=10)[0]) == 4


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="pool is empty"):
        BM25Retriever([])
    with pytest.raises(ValueError, match="k=0"):
        RandomRetriever(["a"]).retrieve(["q"], k=0)
