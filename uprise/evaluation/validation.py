"""The trained retriever's own validation queries, and a value chosen on them.

Contract: `validation_set(prompt_retriever, instead)` re-derives, from a loaded trained
`PromptRetriever`'s export metadata (`scores_path`, `queries_path`, `seed`, `val_fraction`), the
scored queries its training held out and ranked for validation
(`retriever.data.validation_query_ids`, those with a positive under the plain UPRISE rule, as
`RetrieverDataModule` keeps them; never trained on, never evaluation data), with their
candidates' LM scores and pool rows.
`choose_on_validation(grid, relevance, ...)` ranks those candidates by `relevance(value)` for
every value of a grid, measures NDCG@3 against the LM's scores (the metric training selects its
checkpoint by) and keeps the best value (`choose_weight`: ties to the larger one), recording the
curve, n and paired-bootstrap CIs against named grid values. Used by the hybrid's weight
(`uprise.evaluation.hybrid`) and the interpolation's alpha (`uprise.evaluation.wise`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from flan_data.schema import Query
from uprise.evaluation.stats import paired_bootstrap

METRIC = "ndcg@3"
VAL_FRACTION_DEFAULT = 0.1
"""`RetrieverDataModule`'s default, used for exports written before `val_fraction` was recorded."""


def choose_weight(curve: dict[float, float]) -> float:
    """The value (a weight, an alpha) with the highest validation metric; ties go to the larger."""
    if not curve:
        raise ValueError("no weight was measured; the validation set is empty.")
    return max(curve, key=lambda w: (curve[w], w))


def choose_on_validation(grid: tuple[float, ...], relevance: Callable[[float], np.ndarray],
                         lm: np.ndarray, cols: np.ndarray, key: str, ends: dict[str, float],
                         seed: int) -> dict[str, Any]:
    """The value of `grid` whose `relevance(value)` (n_val, max_candidates) ranks the validation
    candidates best by `METRIC` against `lm` (same shape; `cols` -1 marks padding), ties to the
    larger value, as `{key: value, "metric", "n_queries", "curve"}` plus, per name of `ends`,
    the paired-bootstrap CI of the chosen value against that grid value."""
    import torch

    from retriever.ranking import ranking_metrics

    mask = torch.as_tensor(cols >= 0)  # (n_val, max_candidates)
    per_query = {}
    for value in grid:
        got = ranking_metrics(torch.as_tensor(relevance(value)), torch.as_tensor(lm),
                              mask)[METRIC].numpy()  # (n_val,)
        per_query[value] = got[~np.isnan(got)]
    curve = {v: float(q.mean()) if q.size else float("nan") for v, q in per_query.items()}
    best = choose_weight({v: m for v, m in curve.items() if not np.isnan(m)})
    out = {key: best, "metric": METRIC, "n_queries": int(per_query[best].size),
           "curve": {str(v): m for v, m in curve.items()}}
    for name, end in ends.items():
        if end in per_query:
            out[name] = paired_bootstrap(per_query[best], per_query[end], seed=seed)
    return out


def validation_set(prompt_retriever: Any, instead: str,
                   ) -> tuple[list[Query], np.ndarray, np.ndarray, dict]:
    """The validation queries, their candidates' LM scores (n_val, max_candidates; NaN
    padding), the candidates' pool rows (-1 padding) and where they came from. `instead`: what
    the caller's user can do when they cannot be re-derived (ends each such error)."""
    from flan_data.score_folder import read_scores
    from flan_data.stage_io import read_stage_file
    from retriever.data import validation_examples, validation_query_ids

    meta = prompt_retriever.config.get("metadata") or {}
    where = prompt_retriever.path or "the retriever"
    missing = [k for k in ("scores_path", "queries_path", "seed") if k not in meta]
    if not meta.get("trained") or missing:
        raise ValueError(f"{where}: uprise_config.json metadata lacks {missing or ['trained']}; "
                         "the weight is chosen on a trained retriever's validation queries. "
                         f"Pass a retriever exported by `uprise train`, or {instead}.")
    for key in ("scores_path", "queries_path"):
        if not Path(meta[key]).exists():
            raise FileNotFoundError(f"{where}: metadata {key} {meta[key]} does not exist here "
                                    f"(trained on another machine?); {instead}.")
    val_fraction = meta.get("val_fraction", VAL_FRACTION_DEFAULT)
    scores = read_scores(meta["scores_path"])
    held = validation_query_ids({s.query_id for s in scores}, val_fraction, meta["seed"])
    val_ids = {ex.query_id for ex in validation_examples(scores, held)}
    if not val_ids:
        raise ValueError(f"{where}: training held out no labelled validation queries "
                         f"(val_fraction {val_fraction}); {instead}.")
    by_id = {q.id: q for q in read_stage_file(meta["queries_path"], Query)}
    queries = [by_id[i] for i in sorted(val_ids)]
    row = {p.id: i for i, p in enumerate(prompt_retriever.prompts)}
    cand: dict[str, list[tuple[int, float]]] = {q.id: [] for q in queries}
    for s in scores:
        if s.query_id in val_ids:
            if s.prompt_id not in row:
                raise KeyError(f"{meta['scores_path']}: candidate {s.prompt_id!r} of validation "
                               f"query {s.query_id!r} is not in {where}'s pool; index the pool "
                               "the retriever was trained on.")
            cand[s.query_id].append((row[s.prompt_id], s.score))
    width = max(len(c) for c in cand.values())
    cols = np.full((len(queries), width), -1)  # (n_val, width)
    lm = np.full((len(queries), width), np.nan)  # (n_val, width)
    for i, q in enumerate(queries):
        for j, (col, score) in enumerate(cand[q.id]):
            cols[i, j], lm[i, j] = col, score
    return queries, lm, cols, {"val_fraction": val_fraction,
                               "scores_path": str(meta["scores_path"])}
