"""bench/scorer_labels.py: two scorers' labels of the same candidates compared, against a
hand-computed case (SST-2 has options, CommonGen is a generation task)."""

from __future__ import annotations

import pytest
from bench_scripts import load_script

from flan_data.schema import Prompt, Query, Score


def _module():
    return load_script("scorer_labels")


def _scores(lm: str, by_query: dict[str, list[float]], choice: bool) -> list[Score]:
    return [Score(qid, f"p{i}", lm, 0, [0.0], s, (s > 0.5) if choice else None)
            for qid, row in by_query.items() for i, s in enumerate(row)]


def test_accuracy_label_copy_and_agreement_match_a_hand_computed_case():
    sst2 = [Query(f"sst2:train:{i}", "sst2", "sentiment", 0, f"film {i}",
                  ["negative", "positive"], 1) for i in (0, 2)]
    gen = Query("common_gen:train:1", "common_gen", "struct_to_text", 0, "dog, ball",
                references=["A dog."])
    queries = {q.id: q for q in [*sst2, gen]}
    pool = {p.id: p for p in [Prompt("p0", "imdb", "sentiment", 0, "Nice. positive"),
                              Prompt("p1", "imdb", "sentiment", 0, "Bad. negative"),
                              Prompt("p2", "imdb", "sentiment", 0, "Fine. positive")]}
    a = _scores("a", {"sst2:train:0": [0.9, 0.2, 0.6], "sst2:train:2": [0.4, 0.3, 0.2]}, True)
    b = _scores("b", {"sst2:train:0": [0.3, 0.7, 0.6], "sst2:train:2": [0.1, 0.2, 0.8]}, True)
    a += _scores("a", {"common_gen:train:1": [-1.0, -2.0, -3.0]}, False)
    b += _scores("b", {"common_gen:train:1": [-1.5, -2.5, -0.5]}, False)
    report = _module().compare_scores(queries, pool, {"a": a, "b": b}, seed=0)
    row = report["tasks"]["sst2"]
    # a: positive p0 on query 0 (its answer is the gold one), none on query 2 (nothing correct);
    # b: p1 on query 0 (not the gold answer), p2 on query 2 (the gold one)
    assert row["a"]["accuracy"] == pytest.approx(0.333, abs=1e-3)
    assert row["b"]["accuracy"] == 0.5 and row["a"]["chance"] == 0.5
    assert (row["a"]["positive_carries_gold"], row["a"]["labelled_queries"]) == (1.0, 1)
    assert (row["b"]["positive_carries_gold"], row["b"]["labelled_queries"]) == (0.5, 2)
    assert row["same_positive"] == 0.0 and row["n_queries"] == 2
    assert row["spearman"]["mean"] == pytest.approx(-1.0)  # both queries in reverse order
    gen_row = report["tasks"]["common_gen"]
    assert gen_row["spearman"]["mean"] == pytest.approx(-0.5)  # ranks (2,1,0) vs (1,0,2)
    assert gen_row["a"]["accuracy"] is None and gen_row["same_positive"] == 0.0
    assert report["choice_tasks"] == ["sst2"] and report["above_chance"] == {"a": [], "b": []}


def test_spearman_averages_tied_ranks_and_is_zero_for_a_constant_side():
    module = _module()
    assert module.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9487, abs=1e-4)
    assert module.spearman([1, 1, 1], [1, 2, 3]) == 0.0


def test_different_pairs_are_refused():
    q = Query("common_gen:train:1", "common_gen", "struct_to_text", 0, "x", references=["y"])
    a = _scores("a", {q.id: [-1.0, -2.0]}, False)
    with pytest.raises(SystemExit, match="judge different pairs"):
        _module().compare_scores({q.id: q}, {}, {"a": a, "b": a[:1]}, seed=0)
