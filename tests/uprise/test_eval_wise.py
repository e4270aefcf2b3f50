"""The interpolation weight of a trained retriever with its start, measured on its own
validation queries (`uprise.evaluation.wise`): alpha 1 reproduces the validation NDCG@3 that
training recorded for the exported towers, alpha 0 the one of its reference pass on the starting
towers, and `interpolated_ranker` ranks as the two exports do at its ends."""

from __future__ import annotations

import json

import pytest

from flan_data.stage_io import POOL
from uprise.evaluation.ranking import dense_ranker, interpolated_ranker
from uprise.evaluation.validation import choose_weight
from uprise.evaluation.wise import calibrate_alpha
from uprise.stages import build_untrained_retriever


@pytest.fixture(scope="module")
def exports(hand_scored_retriever, train_tiny_retriever, tiny_bert_path):
    """The trained epoch exported even where the start validated better (the ends differ)."""
    root, _ = hand_scored_retriever
    trained = train_tiny_retriever(root, "run_last_epoch", keep_start_if_best=False)
    untrained = build_untrained_retriever(str(tiny_bert_path), root / "data" / POOL,
                                          root / "untrained_retriever", {})
    return trained, untrained


def test_the_curves_ends_are_trainings_own_validation_numbers(exports):
    trained, untrained = exports
    got = calibrate_alpha(trained, untrained, alphas=(0.0, 0.5, 1.0))
    meta = json.loads((trained / "uprise_config.json").read_text())["metadata"]
    recorded = meta["validation_ranking"]
    assert recorded["exported"]["stage"] == "fit"  # else both ends would be the same towers
    assert got["curve"]["1.0"] == pytest.approx(recorded["exported"]["ndcg@3"])
    assert got["curve"]["0.0"] == pytest.approx(recorded["reference"]["ndcg@3"])
    assert got["n_queries"] == recorded["exported"]["n_queries"]
    assert got["alpha"] == choose_weight({float(a): v for a, v in got["curve"].items()})
    assert {"vs_trained", "vs_untrained"} <= set(got) and got["metric"] == "ndcg@3"


def test_the_interpolated_rankers_ends_are_the_two_exports(exports):
    trained, untrained = exports
    queries = ["Is the cat on the mat?", "Premise: rain. Hypothesis: wet streets."]
    prompts = ["a sunny day. answer: yes", "the dog barked", "Hypothesis: dry. answer: no"]
    for alpha, export in ((1.0, trained), (0.0, untrained)):
        assert interpolated_ranker(trained, untrained, alpha)(queries, prompts) == \
            pytest.approx(dense_ranker(export)(queries, prompts), abs=1e-6)
    middle = interpolated_ranker(trained, untrained, 0.5)(queries, prompts)
    assert middle != pytest.approx(dense_ranker(trained)(queries, prompts), abs=1e-4)


def test_an_untrained_export_cannot_choose_alpha_and_says_what_to_do(exports):
    _, untrained = exports
    with pytest.raises(ValueError, match=r"metadata lacks .*or interpolate at a fixed alpha"):
        calibrate_alpha(untrained, untrained)
