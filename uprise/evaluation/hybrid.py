"""The hybrid method's weight, chosen on the trained retriever's own validation queries.

Contract: `calibrate(prompt_retriever)` takes a loaded, trained `PromptRetriever`, re-derives
the scored queries its training held out and ranked for validation
(`uprise.evaluation.validation.validation_set`: training clusters only, never evaluation data),
ranks each one's scored candidates at every weight of `serve.hybrid.WEIGHTS` by the mixed
relevance (z-scored over the whole pool, as retrieval does) and keeps the weight with the best
NDCG@3 against the LM's scores (`choose_on_validation`: ties to the larger weight, i.e. more of
the trained retriever). The result records the curve, n and paired-bootstrap CIs of the chosen
weight against the dense retriever alone (weight 1) and BM25 alone (weight 0).
`chosen_weight(retriever_dir, weight)` is what `uprise eval` records: a given weight as is, else
`calibrate` on the export in `retriever_dir`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from uprise.evaluation.validation import METRIC, choose_on_validation, validation_set

log = logging.getLogger(__name__)


def calibrate(prompt_retriever: Any, weights: tuple[float, ...] | None = None,
              seed: int = 42) -> dict[str, Any]:
    """Measures every weight on the validation queries and keeps the best (module docstring)."""
    from serve.hybrid import WEIGHTS, HybridRetriever, mix

    queries, lm, cols, meta = validation_set(prompt_retriever, instead="give --hybrid-weight")
    dense, lexical = HybridRetriever(prompt_retriever, 1.0).parts([q.input for q in queries])
    rows = np.arange(len(queries))[:, None]  # (n_val, 1)

    def relevance(w: float) -> np.ndarray:
        return mix(dense, lexical, w)[rows, np.maximum(cols, 0)]  # (n_val, max_candidates)

    out = {**choose_on_validation(weights or WEIGHTS, relevance, lm, cols, "weight",
                                  {"vs_dense": 1.0, "vs_bm25": 0.0}, seed), **meta}
    curve = out["curve"]
    log.info("hybrid weight %.1f (validation %s %.3f, n=%d; dense alone %.3f, BM25 alone %.3f)",
             out["weight"], METRIC, curve[str(out["weight"])], out["n_queries"],
             curve.get("1.0", np.nan), curve.get("0.0", np.nan))
    return out


def chosen_weight(retriever_dir: str | Path, weight: float | None = None,
                  seed: int = 42) -> dict[str, Any]:
    """`{"weight": weight, "source": "--hybrid-weight"}` when a weight is given, else the
    calibration of the trained export in `retriever_dir` (its `weight` is the one chosen)."""
    if weight is not None:
        return {"weight": weight, "source": "--hybrid-weight"}
    from serve import PromptRetriever

    return calibrate(PromptRetriever.from_pretrained(str(retriever_dir), device="cpu"),
                     seed=seed)
