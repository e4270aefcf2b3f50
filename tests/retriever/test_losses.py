"""Loss math against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from retriever.losses import distill_kl, info_nce


def test_info_nce_matches_hand_computation():
    q_emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (batch=2, dim=2)
    p_emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # (n_prompts=3, dim=2)
    positive_idx = torch.tensor([0, 2])
    # logits / 0.5: q0 -> [2, 0, 2]; q1 -> [0, 4, 2]
    loss0 = -(2 - math.log(math.exp(2) + math.exp(0) + math.exp(2)))
    loss1 = -(2 - math.log(math.exp(0) + math.exp(4) + math.exp(2)))
    got = info_nce(q_emb, p_emb, positive_idx, temperature=0.5)
    assert got.item() == pytest.approx((loss0 + loss1) / 2, rel=1e-6)


def test_info_nce_ignores_prompts_as_good_as_the_positive():
    q_emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p_emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    ignore = torch.tensor([[False, False, True], [True, False, False]])
    # q0 without prompt 2: logits [2, 0]; q1 without prompt 0: logits [4, 2], positive 2
    loss0 = -(2 - math.log(math.exp(2) + math.exp(0)))
    loss1 = -(2 - math.log(math.exp(4) + math.exp(2)))
    got = info_nce(q_emb, p_emb, torch.tensor([0, 2]), temperature=0.5, ignore=ignore)
    assert got.item() == pytest.approx((loss0 + loss1) / 2, rel=1e-6)


def test_info_nce_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature=0"):
        info_nce(torch.ones(1, 2), torch.ones(1, 2), torch.tensor([0]), temperature=0)


def test_distill_kl_matches_hand_computation_with_padding():
    q_emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (batch=2, dim=2)
    p_emb_per_query = torch.tensor([
        [[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]],   # third slot is padding
        [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]],
    ])  # (batch=2, n_cand=3, dim=2)
    lm_scores = torch.tensor([[0.0, math.log(3.0), 9.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])

    def kl(t, s):
        return sum(ti * math.log(ti / si) for ti, si in zip(t, s, strict=True))

    # query 0: target softmax([0, log 3]) = [1/4, 3/4]; retriever softmax([1, 0])
    s0 = [math.e / (math.e + 1), 1 / (math.e + 1)]
    # query 1: uniform target; retriever softmax([1, 0, 0])
    z = math.e + 2
    s1 = [math.e / z, 1 / z, 1 / z]
    expected = (kl([0.25, 0.75], s0) + kl([1 / 3] * 3, s1)) / 2
    got = distill_kl(q_emb, p_emb_per_query, lm_scores, mask=mask)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_distill_kl_divides_each_side_by_its_own_temperature():
    # the configs' KD setting: log-score targets at lm_temperature 0.1; retriever logits
    # q.p = (1, 0.5) at temperature 0.5 -> softmax([2, 1])
    q_emb = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])  # (1, 2, 2)
    s = [math.e / (math.e + 1), 1 / (math.e + 1)]
    same = distill_kl(q_emb, p, torch.tensor([[0.0, -0.1]]), temperature=0.5,
                      lm_temperature=0.1)  # target softmax([0, -1]) = s
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    t = [math.e ** 2 / (math.e ** 2 + 1), 1 / (math.e ** 2 + 1)]  # softmax([0, -2])
    sharper = distill_kl(q_emb, p, torch.tensor([[0.0, -0.2]]), temperature=0.5,
                         lm_temperature=0.1)
    expected = sum(a * math.log(a / b) for a, b in zip(t, s, strict=True))
    assert sharper.item() == pytest.approx(expected, rel=1e-5)


def test_distill_kl_is_zero_when_distributions_agree_and_has_finite_grads():
    q_emb = torch.tensor([[1.0, 0.0]], requires_grad=True)
    p = torch.tensor([[[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])  # (1, 3, 2)
    lm_scores = torch.tensor([[2.0, 1.0, 7.0]])
    mask = torch.tensor([[True, True, False]])
    loss = distill_kl(q_emb, p, lm_scores, mask=mask)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(q_emb.grad).all()
