"""Ranking diagnostics against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from retriever.ranking import ndcg_at_k, ranking_metrics, spearman, top1_agreement

LM = torch.tensor([[1.0, 0.0, 0.5]])
RETRIEVER = torch.tensor([[0.1, 0.9, 0.5]])  # ranks the LM's worst first, its best last


def test_ndcg_by_hand():
    # gains (min-max of the LM scores) [1, 0, .5]; retriever order 1, 2, 0.
    dcg = 0.0 / math.log2(2) + 0.5 / math.log2(3)
    ideal = 1.0 / math.log2(2) + 0.5 / math.log2(3)
    assert ndcg_at_k(RETRIEVER, LM, k=2).item() == pytest.approx(dcg / ideal)
    assert ndcg_at_k(LM, LM, k=2).item() == pytest.approx(1.0)
    assert ndcg_at_k(LM, LM, k=10).item() == pytest.approx(1.0)  # k beyond n: all of them


def test_top1_and_spearman_by_hand():
    assert top1_agreement(RETRIEVER, LM).item() == 0.0
    assert top1_agreement(LM * 3, LM).item() == 1.0
    assert spearman(RETRIEVER, LM).item() == pytest.approx(-1.0)
    assert spearman(-RETRIEVER, LM).item() == pytest.approx(1.0)
    # ties share ranks: lm ranks (2.5, 2.5, 1), retriever ranks (1, 3, 2)
    tied = torch.tensor([[1.0, 1.0, 0.0]])
    assert top1_agreement(torch.tensor([[0.0, 5.0, 1.0]]), tied).item() == 1.0
    a, b = torch.tensor([2.5, 2.5, 1.0]), torch.tensor([1.0, 3.0, 2.0])
    a, b = a - a.mean(), b - b.mean()
    want = float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()))
    assert spearman(torch.tensor([[0.0, 5.0, 1.0]]), tied).item() == pytest.approx(want)


def test_padding_is_ignored_and_undefined_queries_are_nan():
    lm = torch.tensor([[1.0, 0.0, 0.5, 9.0], [0.3, 0.3, 0.3, 0.3]])
    retriever = torch.tensor([[0.1, 0.9, 0.5, 99.0], [1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    got = ranking_metrics(retriever, lm, mask, k=2)
    assert set(got) == {"ndcg@2", "top1", "spearman"}
    assert got["ndcg@2"][0].item() == pytest.approx(ndcg_at_k(RETRIEVER, LM, k=2).item())
    assert got["top1"][0].item() == 0.0 and got["spearman"][0].item() == pytest.approx(-1.0)
    assert all(math.isnan(v[1].item()) for v in got.values())  # all LM scores equal


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(batch, n_candidates\)"):
        ndcg_at_k(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="k=0"):
        ndcg_at_k(LM, LM, k=0)


def _loop_reference(retriever: torch.Tensor, lm: torch.Tensor, mask: torch.Tensor,
                    k: int) -> dict[str, list[float]]:
    """The metrics' definitions, one query at a time on its real candidates only."""
    out: dict[str, list[float]] = {f"ndcg@{k}": [], "top1": [], "spearman": []}

    def ranks(x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([float((x < v).sum()) + (float((x == v).sum()) + 1) / 2 for v in x],
                            dtype=torch.float64)

    for row in range(lm.shape[0]):
        s, r = lm[row][mask[row]].double(), retriever[row][mask[row]].double()
        if s.numel() < 2 or s.max() == s.min():
            for values in out.values():
                values.append(math.nan)
            continue
        gain = ((s - s.min()) / (s.max() - s.min())).tolist()
        order = sorted(range(len(gain)), key=lambda i: (-float(r[i]), i))[:k]
        ideal = sorted(gain, reverse=True)[:k]
        disc = [1 / math.log2(i + 2) for i in range(len(order))]
        dcg = sum(gain[i] * d for i, d in zip(order, disc, strict=True))
        out[f"ndcg@{k}"].append(dcg / sum(g * d for g, d in zip(ideal, disc, strict=True)))
        out["top1"].append(float(s[order[0]] == s.max()))
        a, b = ranks(s), ranks(r)
        a, b = a - a.mean(), b - b.mean()
        denom = float(torch.sqrt((a * a).sum() * (b * b).sum()))
        out["spearman"].append(float((a * b).sum()) / denom if denom else math.nan)
    return out


@pytest.mark.parametrize("k", [1, 3, 40])
def test_batched_metrics_equal_the_per_query_definition(k):
    gen = torch.Generator().manual_seed(k)
    lm = torch.randint(0, 4, (60, 9), generator=gen).double()  # many ties, some constant rows
    retriever = torch.randint(0, 3, (60, 9), generator=gen).double()  # ties in the order too
    mask = torch.rand(60, 9, generator=gen) > 0.3
    mask[0] = False  # a query with no real candidate
    mask[1] = torch.arange(9) == 4  # and one with a single one
    lm[~mask] = torch.nan  # padding may hold anything: the section's matrix has NaN there
    got = ranking_metrics(retriever, lm, mask, k=k)
    want = _loop_reference(retriever, lm, mask, k)
    assert sum(math.isnan(v) for v in want["top1"]) >= 2
    for name, values in want.items():
        assert got[name].tolist() == pytest.approx(values, nan_ok=True, abs=1e-12), name


def test_no_candidates_gives_nan():
    got = ranking_metrics(torch.zeros(2, 0), torch.zeros(2, 0))
    assert all(v.shape == (2,) and v.isnan().all() for v in got.values())
