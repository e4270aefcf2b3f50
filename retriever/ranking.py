"""Ranking quality of a retriever against the LM's own judgements, as pure functions on tensors.

Contract: each query has `n` scored candidates; `retriever_scores` (batch, n) are the
retriever's relevance scores (q_emb . p_emb), `lm_scores` (batch, n) the LM's (higher = the
prompt helped more), `mask` (batch, n) marks real slots (False = padding). Every metric returns
one value per query, shape (batch,), so callers can average or bootstrap; a query on which a
metric is undefined (fewer than two real candidates, or all LM scores equal) gets NaN.

    ndcg_at_k       graded gain = the LM score min-max scaled to [0, 1] within the query;
                    DCG of the retriever's top k over DCG of the LM's own top k
    top1_agreement  1.0 when the retriever's first candidate is one of the LM's best
    spearman        rank correlation of the two score lists (ties get their average rank)

These are the diagnostics of UPRISE's first rung: does the retriever order prompts the way the
scoring LM does, on queries training never saw?
"""

from __future__ import annotations

import math

import torch

METRICS = ("ndcg@3", "top1", "spearman")
"""The names `ranking_metrics` returns, in report order."""


def _check(retriever_scores: torch.Tensor, lm_scores: torch.Tensor,
           mask: torch.Tensor | None) -> torch.Tensor:
    if retriever_scores.shape != lm_scores.shape or retriever_scores.dim() != 2:
        raise ValueError(
            f"retriever_scores {tuple(retriever_scores.shape)} and lm_scores "
            f"{tuple(lm_scores.shape)} must both be (batch, n_candidates)."
        )
    if mask is None:
        return torch.ones_like(lm_scores, dtype=torch.bool)
    if mask.shape != lm_scores.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must match scores {tuple(lm_scores.shape)}.")
    return mask.bool()


def _real_range(lm_scores: torch.Tensor, mask: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query: the LM's lowest and highest real score and whether the metrics are defined
    (at least two real candidates with different scores); each (batch,)."""
    s = lm_scores.double()
    if s.shape[1] == 0:  # no candidates at all: nothing is defined
        nothing = torch.full((s.shape[0],), math.nan, dtype=torch.float64, device=s.device)
        return nothing, nothing, torch.zeros_like(nothing, dtype=torch.bool)
    low = torch.where(mask, s, math.inf).amin(dim=1)  # (batch,)
    high = torch.where(mask, s, -math.inf).amax(dim=1)  # (batch,)
    defined = (mask.sum(dim=1) >= 2) & (high > low)  # (batch,)
    return low, high, defined


def _retriever_order(retriever_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Candidate indices per query, real ones first by descending retriever score, ties (and the
    padding after them) in index order; (batch, n)."""
    order = torch.sort(retriever_scores.double(), dim=1, descending=True, stable=True).indices
    real_first = torch.sort((~mask.gather(1, order)).to(torch.uint8), dim=1, stable=True).indices
    return order.gather(1, real_first)  # (batch, n)


def ndcg_at_k(retriever_scores: torch.Tensor, lm_scores: torch.Tensor, k: int = 3,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """NDCG@k of the retriever's order, with gains from the LM's scores; (batch,)."""
    if k < 1:
        raise ValueError(f"k={k}; expected an integer >= 1.")
    mask = _check(retriever_scores, lm_scores, mask)
    low, high, defined = _real_range(lm_scores, mask)
    span = torch.where(defined, high - low, 1.0)  # (batch,)
    gain = torch.where(mask, (lm_scores.double() - low[:, None]) / span[:, None], 0.0)  # (b, n)
    top = min(k, lm_scores.shape[1])  # padding past a query's real candidates adds no gain
    discount = 1.0 / torch.log2(torch.arange(top, dtype=torch.float64,
                                             device=gain.device) + 2.0)  # (top,)
    picked = gain.gather(1, _retriever_order(retriever_scores, mask)[:, :top])  # (batch, top)
    ideal = torch.sort(gain, dim=1, descending=True).values[:, :top]  # (batch, top)
    out = (picked * discount).sum(dim=1) / (ideal * discount).sum(dim=1)  # (batch,)
    return torch.where(defined, out, math.nan)


def top1_agreement(retriever_scores: torch.Tensor, lm_scores: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """1.0 where the retriever's best candidate has the LM's best score, else 0.0; (batch,)."""
    mask = _check(retriever_scores, lm_scores, mask)
    _, high, defined = _real_range(lm_scores, mask)
    if lm_scores.shape[1] == 0:
        return high  # all NaN
    first = _retriever_order(retriever_scores, mask)[:, :1]  # (batch, 1)
    hit = (lm_scores.double().gather(1, first)[:, 0] == high).double()  # (batch,)
    return torch.where(defined, hit, math.nan)


def _average_ranks(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1-based ranks within each row's real entries, ties sharing their average rank; 0 on
    padding; (batch, n)."""
    real = mask[:, None, :]  # (batch, 1, n): only real entries count as neighbours
    below = ((x[:, None, :] < x[:, :, None]) & real).sum(dim=2)  # (batch, n) smaller than x_i
    equal = ((x[:, None, :] == x[:, :, None]) & real).sum(dim=2)  # (batch, n) with x_i itself
    return torch.where(mask, below.double() + (equal.double() + 1.0) / 2.0, 0.0)


def spearman(retriever_scores: torch.Tensor, lm_scores: torch.Tensor,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """Spearman rank correlation per query (Pearson of average ranks); (batch,)."""
    mask = _check(retriever_scores, lm_scores, mask)
    n_real = mask.sum(dim=1).clamp(min=1).double()  # (batch,)
    a = _average_ranks(lm_scores.double(), mask)  # (batch, n)
    b = _average_ranks(retriever_scores.double(), mask)  # (batch, n)
    a = torch.where(mask, a - (a.sum(dim=1) / n_real)[:, None], 0.0)
    b = torch.where(mask, b - (b.sum(dim=1) / n_real)[:, None], 0.0)
    denom = torch.sqrt((a * a).sum(dim=1) * (b * b).sum(dim=1))  # (batch,)
    defined = (mask.sum(dim=1) >= 2) & (denom > 0)
    return torch.where(defined, (a * b).sum(dim=1) / torch.where(defined, denom, 1.0), math.nan)


def ranking_metrics(retriever_scores: torch.Tensor, lm_scores: torch.Tensor,
                    mask: torch.Tensor | None = None, k: int = 3) -> dict[str, torch.Tensor]:
    """Every metric of this module per query: {"ndcg@k", "top1", "spearman"} -> (batch,)."""
    return {
        f"ndcg@{k}": ndcg_at_k(retriever_scores, lm_scores, k, mask),
        "top1": top1_agreement(retriever_scores, lm_scores, mask),
        "spearman": spearman(retriever_scores, lm_scores, mask),
    }
