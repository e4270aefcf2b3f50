"""bench/prompt_sources.py: a method's prompt sources and the metric by best-prompt kind,
against a hand-computed case (CommonGen is a generation task, SST-2 and RTE have options)."""

from __future__ import annotations

import pytest
from bench_scripts import load_script

from flan_data import Query
from uprise.evaluation.stats import paired_bootstrap


def _module():
    return load_script("prompt_sources")


def test_shares_and_metrics_by_best_prompt_kind_match_a_hand_computed_case():
    queries = [Query(f"common_gen:validation:{i}", "common_gen", "struct_to_text", 0, f"q{i}",
                     references=["r"]) for i in range(3)]
    kind_of = {"a": ("summarization", "generation"), "b": ("sentiment", "choice"),
               "c": ("nli", "choice")}
    demos = [["b", "a"], ["a", "b"], ["c", "b"]]  # best prompt last: a, b, b
    values = {"common_gen:validation:0": 0.3, "common_gen:validation:1": 0.1,
              "common_gen:validation:2": 0.2}
    row = _module().method_sources(queries, demos, kind_of, values, seed=0)
    assert row["clusters"] == {"sentiment": 0.5, "summarization": 0.3333, "nli": 0.1667}
    assert row["per_query"] == {"generation_share": [0.5, 0.5, 0.0],
                                "best_prompt_same_kind": [1.0, 0.0, 0.0]}
    assert row["generation_share"]["diff"] == pytest.approx(1 / 3)
    assert row["generation_share"]["n"] == 3
    assert row["best_prompt_same_kind"]["diff"] == pytest.approx(1 / 3)
    assert row["metric_best_same_kind"]["diff"] == pytest.approx(0.3)
    assert row["metric_best_same_kind"]["n"] == 1
    assert row["metric_best_other_kind"]["diff"] == pytest.approx(0.15)
    assert row["metric_best_other_kind"] == {
        **paired_bootstrap([0.1, 0.2], [0.0, 0.0], seed=0, groups=["common_gen"] * 2), "n": 2}


def test_answer_words_are_averaged_per_task_over_generated_answers_only():
    rows = [{"task": "dart", "prediction": "a b c", "option": None},
            {"task": "dart", "prediction": "a", "option": None},
            {"task": "e2e_nlg", "prediction": "", "option": None},
            {"task": "sst2", "prediction": "1", "option": 1}]
    assert _module().answer_words(rows) == {"dart": 2.0, "e2e_nlg": 0.0}
