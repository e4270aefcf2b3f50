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


def ndcg_at_k(retriever_scores: torch.Tensor, lm_scores: torch.Tensor, k: int = 3,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """NDCG@k of the retriever's order, with gains from the LM's scores; (batch,)."""
    if k < 1:
        raise ValueError(f"k={k}; expected an integer >= 1.")
    mask = _check(retriever_scores, lm_scores, mask)
    out = torch.full((lm_scores.shape[0],), math.nan, dtype=torch.float64)
    for row in range(lm_scores.shape[0]):
        s = lm_scores[row][mask[row]].double()  # (n_real,)
        r = retriever_scores[row][mask[row]].double()  # (n_real,)
        if s.numel() < 2 or s.max() == s.min():
            continue
        gain = (s - s.min()) / (s.max() - s.min())  # (n_real,)
        top = min(k, s.numel())
        discount = 1.0 / torch.log2(torch.arange(top, dtype=torch.float64) + 2.0)  # (top,)
        picked = gain[torch.argsort(r, descending=True, stable=True)[:top]]  # (top,)
        ideal = torch.sort(gain, descending=True).values[:top]  # (top,)
        out[row] = (picked * discount).sum() / (ideal * discount).sum()
    return out


def top1_agreement(retriever_scores: torch.Tensor, lm_scores: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """1.0 where the retriever's best candidate has the LM's best score, else 0.0; (batch,)."""
    mask = _check(retriever_scores, lm_scores, mask)
    out = torch.full((lm_scores.shape[0],), math.nan, dtype=torch.float64)
    for row in range(lm_scores.shape[0]):
        s, r = lm_scores[row][mask[row]], retriever_scores[row][mask[row]]  # (n_real,)
        if s.numel() < 2 or s.max() == s.min():
            continue
        out[row] = float(s[torch.argmax(r)] == s.max())
    return out


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties sharing their average rank."""
    below = (x.unsqueeze(0) < x.unsqueeze(1)).sum(dim=1)  # (n,) values smaller than x_i
    equal = (x.unsqueeze(0) == x.unsqueeze(1)).sum(dim=1)  # (n,) including x_i itself
    return below.double() + (equal.double() + 1.0) / 2.0


def spearman(retriever_scores: torch.Tensor, lm_scores: torch.Tensor,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """Spearman rank correlation per query (Pearson of average ranks); (batch,)."""
    mask = _check(retriever_scores, lm_scores, mask)
    out = torch.full((lm_scores.shape[0],), math.nan, dtype=torch.float64)
    for row in range(lm_scores.shape[0]):
        a = _average_ranks(lm_scores[row][mask[row]])  # (n_real,)
        b = _average_ranks(retriever_scores[row][mask[row]])  # (n_real,)
        a, b = a - a.mean(), b - b.mean()
        denom = torch.sqrt((a * a).sum() * (b * b).sum())
        if a.numel() < 2 or denom == 0:
            continue
        out[row] = (a * b).sum() / denom
    return out


def ranking_metrics(retriever_scores: torch.Tensor, lm_scores: torch.Tensor,
                    mask: torch.Tensor | None = None, k: int = 3) -> dict[str, torch.Tensor]:
    """Every metric of this module per query: {"ndcg@k", "top1", "spearman"} -> (batch,)."""
    return {
        f"ndcg@{k}": ndcg_at_k(retriever_scores, lm_scores, k, mask),
        "top1": top1_agreement(retriever_scores, lm_scores, mask),
        "spearman": spearman(retriever_scores, lm_scores, mask),
    }
