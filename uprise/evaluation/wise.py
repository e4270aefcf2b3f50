"""The interpolation weight of `retriever.interpolate` (WiSE-FT), measured on the trained
retriever's own validation queries.

Contract: `calibrate_alpha(trained_dir, untrained_dir)` ranks every validation query's scored
candidates (`uprise.evaluation.validation.validation_set`: the queries training held out and
ranked for validation, on the training clusters; never evaluation data) by the inner products
of the trained retriever interpolated with its start at each alpha of `ALPHAS`, measures NDCG@3
against the LM's scores (the metric training selects its checkpoint by), and keeps the best
alpha (ties: the larger one, i.e. more of the trained retriever, as the hybrid's weight). The
result records the curve, n and paired-bootstrap CIs of the chosen alpha against the trained
retriever (alpha 1) and its start (alpha 0).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from uprise.evaluation.ranking import interpolated_ranker
from uprise.evaluation.validation import METRIC, choose_on_validation, validation_set

log = logging.getLogger(__name__)

ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


def calibrate_alpha(trained_dir: str | Path, untrained_dir: str | Path,
                    alphas: tuple[float, ...] = ALPHAS, seed: int = 42) -> dict[str, Any]:
    """Measures every alpha on the validation queries and keeps the best (module docstring)."""
    from serve import PromptRetriever

    retriever = PromptRetriever.from_pretrained(str(trained_dir), device="cpu")
    queries, lm, cols, meta = validation_set(
        retriever, "interpolate at a fixed alpha (`retriever.interpolate`) instead")
    used = sorted(set(cols[cols >= 0].tolist()))
    at = np.vectorize({c: i for i, c in enumerate(used)}.get)(np.maximum(cols, used[0]))
    rows = np.arange(len(queries))[:, None]  # (n_val, 1)
    texts = [q.input for q in queries], [retriever.prompts[c].text for c in used]

    def relevance(alpha: float) -> np.ndarray:
        rank = interpolated_ranker(trained_dir, untrained_dir, alpha)
        return rank(*texts)[rows, at]  # (n_val, n_used) -> (n_val, max_candidates)

    out = {**choose_on_validation(alphas, relevance, lm, cols, "alpha",
                                  {"vs_trained": 1.0, "vs_untrained": 0.0}, seed), **meta}
    curve = out["curve"]
    log.info("interpolation alpha %.1f (validation %s %.3f, n=%d; trained %.3f, start %.3f)",
             out["alpha"], METRIC, curve[str(out["alpha"])], out["n_queries"],
             curve.get("1.0", np.nan), curve.get("0.0", np.nan))
    return out
