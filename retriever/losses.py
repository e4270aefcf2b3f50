"""Training losses of the retriever, as pure functions on tensors.

Contract: relevance is the inner product of query and prompt embeddings divided by a
temperature; every loss returns a scalar mean over the queries of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    q_emb: torch.Tensor,
    p_emb: torch.Tensor,
    positive_idx: torch.Tensor,
    temperature: float = 1.0,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """Contrastive loss over every prompt in the batch (UPRISE, Cheng et al. 2023, Eq. 2; DPR).

    Args:
        q_emb: (batch, dim) query embeddings.
        p_emb: (n_prompts, dim) all prompts of the batch: each query's positive and hard
            negatives; every prompt that is not a query's positive is an in-batch negative for it.
        positive_idx: (batch,) long, row of `p_emb` holding each query's positive prompt (the
            candidate that made the LM answer correctly with the best score).
        temperature: logits are `q_emb @ p_emb.T / temperature` (1.0 = plain DPR dot product).
        ignore: (batch, n_prompts) bool or None; True drops that prompt from the query's softmax
            (a prompt known to be as good as the positive is no negative). Never the positive.

    Returns:
        Scalar: mean over queries of `-log softmax(logits)[positive]`.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}; expected a positive number.")
    logits = q_emb @ p_emb.T / temperature  # (batch, n_prompts)
    if ignore is not None:
        rows = torch.arange(len(positive_idx), device=logits.device)
        assert not ignore[rows, positive_idx].any(), "a positive cannot be ignored"
        logits = logits.masked_fill(ignore.to(logits.device), torch.finfo(logits.dtype).min)
    return F.cross_entropy(logits, positive_idx)


def distill_kl(
    q_emb: torch.Tensor,
    p_emb_per_query: torch.Tensor,
    lm_scores: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    lm_temperature: float = 1.0,
) -> torch.Tensor:
    """KL(LM score distribution || retriever distribution) over each query's scored candidates.

    Soft distillation of the proxy LM's preferences (LLM-R, Wang et al. 2023; like
    sentence-transformers `DistillKLDivLoss`).

    Args:
        q_emb: (batch, dim) query embeddings.
        p_emb_per_query: (batch, n_candidates, dim) embeddings of each query's scored candidates.
        lm_scores: (batch, n_candidates) the LM's judgement per candidate in the log domain
            (higher = better): `retriever.labels` values, i.e. log-probability of the gold option
            or the gold answer's log-likelihood. Probabilities in (0, 1) at temperature 1 would
            give a nearly uniform target; LLM-R distils log-scores at a low temperature.
        mask: (batch, n_candidates) bool, False where a slot is padding; None = all real.
        temperature: retriever logits are `q . p / temperature`.
        lm_temperature: target is `softmax(lm_scores / lm_temperature)`.

    Returns:
        Scalar: mean over queries of `sum_j t_j (log t_j - log s_j)`.
    """
    if temperature <= 0 or lm_temperature <= 0:
        raise ValueError(
            f"temperature={temperature}, lm_temperature={lm_temperature}; "
            "expected positive numbers."
        )
    if mask is None:
        mask = torch.ones_like(lm_scores, dtype=torch.bool)
    logits = torch.einsum("bd,bnd->bn", q_emb, p_emb_per_query) / temperature  # (batch, n_cand)
    neg_inf = torch.finfo(logits.dtype).min
    log_s = F.log_softmax(logits.masked_fill(~mask, neg_inf), dim=-1)  # (batch, n_cand)
    target_logits = (lm_scores / lm_temperature).masked_fill(~mask, neg_inf)
    log_t = F.log_softmax(target_logits.to(logits.dtype), dim=-1)  # (batch, n_cand)
    terms = log_t.exp() * (log_t - log_s)  # (batch, n_cand)
    return torch.where(mask, terms, torch.zeros_like(terms)).sum(dim=-1).mean()
