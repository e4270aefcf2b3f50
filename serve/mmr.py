"""Maximal marginal relevance (Carbonell & Goldstein, 1998) over a retrieved candidate set.

Contract: `mmr_order(cand_scores, cand_emb, k, diversity)` picks k of n candidates greedily,
each maximising `(1 - diversity) * relevance - diversity * max similarity to those already
picked`, where relevance is the candidate's inner product with the query (`cand_scores`, best
first as FAISS returns them) and similarity the inner product of prompt embeddings. `diversity`
0 returns the first k (plain top-k); 1 ignores relevance after the first pick. Ties go to the
better-ranked candidate, so the result is deterministic.
"""

from __future__ import annotations

import numpy as np


def mmr_order(cand_scores: np.ndarray, cand_emb: np.ndarray, k: int, diversity: float) -> list[int]:
    """Indices into the candidates, in pick order; (n,) scores and (n, dim) embeddings."""
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity={diversity!r}; expected a number in [0, 1] "
                         "(0 = plain top-k, higher = more varied prompts).")
    n = len(cand_scores)
    k = min(k, n)
    if diversity == 0.0 or k <= 1:
        return list(range(k))
    relevance = np.asarray(cand_scores, dtype=np.float64)  # (n,)
    emb = np.asarray(cand_emb, dtype=np.float64)  # (n, dim)
    sims = emb @ emb.T  # (n, n)
    picked = [0]  # the best-scored candidate always comes first
    redundancy = sims[picked[0]].copy()  # (n,) max similarity to any picked candidate
    available = np.ones(n, dtype=bool)
    available[picked[0]] = False
    while len(picked) < k:
        gain = (1.0 - diversity) * relevance - diversity * redundancy  # (n,)
        gain[~available] = -np.inf
        best = int(np.argmax(gain))  # first maximum = best-ranked among ties
        picked.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, sims[best])
    return picked
