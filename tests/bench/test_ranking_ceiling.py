"""bench/ranking_ceiling.py: the variance share and the reference rankers against
hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bench_scripts import load_script

from retriever.ranking import ranking_metrics


def _module():
    return load_script("ranking_ceiling")


SCORES = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 5.0], [0.0, 1.0, 2.0]])
CENTRED = np.array([[-1.0, 0.0, 1.0], [-1.0, -1.0, 2.0], [-1.0, 0.0, 1.0]])


def test_prompt_effect_share_by_hand():
    m = _module()
    c = m.centred(SCORES)
    assert c == pytest.approx(CENTRED)
    # prompt means (-1, -1/3, 4/3): 3 x (1 + 1/9 + 16/9) = 26/3 of a sum of squares of 10
    assert m.prompt_effect_share(c) == pytest.approx(26 / 30)
    assert m.prompt_effect_share(CENTRED[[0, 2]]) == pytest.approx(1.0)  # identical rows


def test_others_mean_leaves_the_query_out_and_stays_in_its_group():
    m = _module()
    assert m.others_mean(CENTRED)[0] == pytest.approx([-1.0, -0.5, 1.5])
    four = np.vstack([CENTRED, [[0.0, 1.0, -1.0]]])
    by_group = m.others_mean(four, ["a", "b", "a", "b"])
    assert by_group == pytest.approx(four[[2, 3, 0, 1]])
    with pytest.raises(ValueError, match="group 'b' has 1 query"):
        m.others_mean(CENTRED, ["a", "a", "b"])


def test_knn_mean_averages_the_nearest_other_queries():
    m = _module()
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    # nearest other query: 0 -> 1, 1 -> 0, 2 -> 1 (0.1 against 0.0)
    assert m.knn_mean(CENTRED, emb, 1) == pytest.approx(CENTRED[[1, 0, 1]])
    assert m.knn_mean(CENTRED, emb, 2)[0] == pytest.approx(CENTRED[[1, 2]].mean(axis=0))


def test_a_reference_ranker_that_sees_the_pattern_ranks_perfectly():
    m = _module()
    # every query prefers the prompts in the same order: the others' mean ranks it exactly
    scores = np.array([[0.1, 0.5, 0.3], [1.1, 1.9, 1.4], [-2.0, -1.0, -1.5]])
    got = ranking_metrics(torch.as_tensor(m.others_mean(m.centred(scores))),
                          torch.as_tensor(scores))
    assert got["spearman"] == pytest.approx([1.0, 1.0, 1.0])
    assert got["top1"] == pytest.approx([1.0, 1.0, 1.0])
