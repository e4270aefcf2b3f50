"""The report's arithmetic: bootstrap intervals, task/cluster averages, the printed table."""

from __future__ import annotations

import numpy as np
import pytest

from flan_data import Query
from uprise.evaluation import format_table, summarise
from uprise.evaluation.stats import format_diff, paired_bootstrap


def test_paired_bootstrap_matches_a_hand_computed_resampling():
    a, b = [1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]
    got = paired_bootstrap(a, b, n_resamples=500, seed=7)
    diff = np.array(a) - np.array(b)
    idx = np.random.default_rng(7).integers(0, 4, size=(500, 4))
    means = diff[idx].mean(axis=1)
    assert got["diff"] == pytest.approx(0.5)
    assert got["low"] == pytest.approx(np.percentile(means, 2.5))
    assert got["high"] == pytest.approx(np.percentile(means, 97.5))
    assert got["low"] <= 0.5 <= got["high"]


def test_identical_methods_have_a_zero_width_interval():
    got = paired_bootstrap([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])
    assert got == {"diff": 0.0, "low": 0.0, "high": 0.0}


def test_format_diff_scales_signs_and_rounds_every_value():
    d = {"diff": 0.0234, "low": -0.0051, "high": 0.05}
    assert format_diff(d) == "+2.3 [-0.5, +5.0]"
    assert format_diff(d, 1, 3, ",") == "+0.023 [-0.005,+0.050]"


def test_paired_bootstrap_rejects_unpaired_input():
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_summary_averages_tasks_then_clusters():
    queries = [Query(f"sst2:validation:{i}", "sst2", "sentiment", 0, "x", ["a", "b"], 0)
               for i in range(4)]
    queries += [Query("sentiment140:test:0", "sentiment140", "sentiment", 0, "x", ["a", "b"], 0)]
    values = {"zero_shot": [1, 0, 0, 0, 1.0], "trained": [1, 1, 0, 0, 0.0]}
    report = summarise(queries, values)
    assert report["tasks"]["sst2"]["n"] == 4
    assert report["methods"]["zero_shot"]["tasks"] == {"sentiment140": 1.0, "sst2": 0.25}
    assert report["methods"]["trained"]["average"] == pytest.approx((0.5 + 0.0) / 2)
    assert report["methods"]["trained"]["clusters"]["sentiment"] == pytest.approx(0.25)
    # stratified by task: the difference is that of the averages (0.25 - 0.625), not of the
    # pooled example means (which would be 0.4 - 0.4)
    assert report["methods"]["trained"]["vs_zero_shot"]["diff"] == pytest.approx(-0.375)
    assert report["best_baseline"] == "zero_shot"
    assert report["methods"]["trained"]["vs_best_baseline"] == \
        report["methods"]["trained"]["vs_zero_shot"]
    table = format_table(report)
    assert "sst2" in table and "trained" in table and "25.0" in table


def test_prediction_changes_count_flips_against_zero_shot_by_hand():
    from uprise.evaluation.report import markdown
    from uprise.evaluation.summary import prediction_changes

    queries = [Query(f"sst2:validation:{i}", "sst2", "sentiment", 0, "x", ["a", "b"], 0)
               for i in range(4)]
    queries.append(Query("nq_open:validation:0", "nq_open", "closed_book_qa", 0, "x", None,
                         None, ["paris"]))

    def rows(options, texts, values):
        return [{"option": o, "prediction": t, "value": v}
                for o, t, v in zip(options, texts, values, strict=True)]

    zs = rows([0, 0, 1, 1, None], ["a", "a", "b", "b", "Paris"], [1, 1, 0, 0, 1.0])
    # query 0 unchanged; 1 flips right->wrong; 2 flips wrong->right; 3 unchanged (same option,
    # other text); the generation answer differs only by surrounding space: unchanged
    tr = rows([0, 1, 0, 1, None], ["a", "b", "a", "b!", " Paris "], [1, 0, 1, 0, 1.0])
    out = prediction_changes(queries, {"zero_shot": zs, "trained": tr})
    assert set(out) == {"trained"}
    c = out["trained"]
    assert (c["changed"], c["fixed"], c["broken"], c["n"]) == (2, 1, 1, 5)
    # stratified by task like the table's averages: (2/4 + 0/1) / 2
    assert c["rate"] == pytest.approx(0.25)
    assert c["low"] <= c["rate"] <= c["high"]
    assert prediction_changes(queries, {"trained": tr}) == {}

    report = summarise(queries, {"zero_shot": [r["value"] for r in zs],
                                 "trained": [r["value"] for r in tr]})
    report["methods"]["trained"]["changed_vs_zero_shot"] = c
    assert "| answers changed vs zero-shot, % (95% CI) |  |  |  | 25.0 [" in markdown(report)
    assert "changed vs zs" in format_table(report)


def test_abstain_lines_count_queries_instead_of_rounding_a_rate():
    """479 of 480 used to print as "abstains on 100%"; the report gives the count."""
    from uprise.evaluation.report import _abstain_markdown

    sub = {"threshold": 0.5, "n": 480, "abstain_rate": 479 / 480, "with_prompts_metric": 0.2,
           "zero_shot_metric": 0.25}
    lines = _abstain_markdown({"calibration": {"struct_to_text": {
        **sub, "abstain_by": "kind", "by_kind": {"generation": sub}}}})
    assert "480 training-cluster validation queries (abstains on 479 of them)" in lines[3]
    assert "abstains on 479;" in lines[4] and "100%" not in "\n".join(lines)


def test_weighted_groups_by_hand():
    # group x: differences all 1, group y: all 0; weights 3 : 1 -> every resample is 0.75
    a, b = [1.0, 1.0, 0.0, 0.0, 0.0], [0.0] * 5
    groups = ["x", "x", "y", "y", "y"]
    got = paired_bootstrap(a, b, seed=1, groups=groups, weights={"x": 3.0, "y": 1.0})
    assert (got["diff"], got["low"], got["high"]) == pytest.approx((0.75, 0.75, 0.75))
    equal = paired_bootstrap(a, b, seed=1, groups=groups)
    same = paired_bootstrap(a, b, seed=1, groups=groups, weights={"x": 2, "y": 2})
    assert [same[k] for k in equal] == pytest.approx(list(equal.values()))
    assert equal["diff"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"no weight for group\(s\) \['y'\]"):
        paired_bootstrap(a, b, groups=groups, weights={"x": 1.0})
    with pytest.raises(ValueError, match="needs groups"):
        paired_bootstrap(a, b, weights={"x": 1.0})
