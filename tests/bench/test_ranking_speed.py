"""bench/ranking_speed.py: both ways of computing the metrics agree before anything is timed."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from bench_scripts import load_script


def test_per_query_calls_equal_the_batched_call_with_missing_scores():
    bench = load_script("ranking_speed")
    retriever, lm, mask = bench.section(40, 7, seed=2)
    assert lm.isnan().any() and (lm.isnan() == ~mask).all()  # missing pairs are masked NaN
    from retriever.ranking import ranking_metrics

    batched, plain = ranking_metrics(retriever, lm, mask), bench.per_query(retriever, lm, mask)
    for name, values in batched.items():
        assert torch.allclose(values, plain[name], atol=1e-12, equal_nan=True), name


def test_writes_one_row_per_shape(tmp_path):
    out = tmp_path / "speed.json"
    load_script("ranking_speed").main(["--shapes", "12x5", "6x3", "--repeats", "1",
                                       "--rounds", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["queries"], r["prompts"]) for r in rows] == [(12, 5), (6, 3)]
    assert all(r["batched_ms"] > 0 and r["per_query_ms"] > 0 for r in rows)


@pytest.mark.parametrize("text", ["300", "300x", "0x20", "ax20"])
def test_bad_shapes_are_refused_with_the_expected_form(text):
    with pytest.raises(argparse.ArgumentTypeError, match="300x20|>= 1"):
        load_script("ranking_speed").parse_shape(text)
