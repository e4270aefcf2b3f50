"""Abstention: the trained retriever gives no prompts when its top retrieval score is low.

Contract: `methods.abstaining_prompts(prompt_retriever, k, threshold)` is a method returning the
trained retriever's top-k prompts (best last) when the best prompt's score (inner product) is at
least `threshold`, else none (zero-shot). The threshold is calibrated on *training-cluster*
validation queries that are in neither the pool nor the training queries
(`calibration_queries`): `calibrate` evaluates the LM on them with and without the retrieved
prompts, and `choose_threshold` picks the threshold that maximises the mean metric when
queries below it go without prompts (ties: the lowest threshold, i.e. abstain least); it also
picks one threshold per answer kind (`thresholds_by_kind`: choice or generation, from the same
LM calls), which `--abstain-by kind` applies to held-out queries of that kind: prompts of other
clusters can help one kind and hurt the other.
During calibration a query's own cluster is removed from its hits, as if that cluster were
held out: with same-task prompts in reach, training-cluster queries score far higher than
held-out ones, and a threshold fitted on such scores would abstain on every held-out query.
The held-out cluster is never looked at. `abstain_effect` says, per cluster, whether the
abstaining method removes the trained retriever's regressions without losing its gains.
"""

from __future__ import annotations

import logging
import math
import random
from statistics import mean
from typing import Any

from flan_data import Query, StageData, evaluation_queries
from uprise.evaluation.methods import ABSTAIN, query_kind, top_scores
from uprise.evaluation.predictors import Predictor
from uprise.evaluation.run import metric_values

log = logging.getLogger(__name__)


def choose_threshold(scores: list[float], with_prompts: list[float],
                     without: list[float]) -> dict[str, Any]:
    """The retrieval-score threshold maximising the mean metric on calibration queries.

    scores: each query's top retrieval score; with_prompts/without: its metric value with the
    retrieved prompts and zero-shot. Candidates: -inf (never abstain), every distinct score,
    and +inf (always abstain). Queries scoring below the threshold get `without`.
    """
    if not (len(scores) == len(with_prompts) == len(without)) or not scores:
        raise ValueError(f"calibration needs equal, non-empty lists (got {len(scores)}, "
                         f"{len(with_prompts)}, {len(without)} values)")
    best: dict[str, Any] | None = None
    for t in [-math.inf, *sorted(set(scores)), math.inf]:
        value = mean(w if s >= t else z for s, w, z in zip(scores, with_prompts, without,
                                                           strict=True))
        if best is None or value > best["calibration_metric"]:
            best = {"threshold": t, "calibration_metric": value}
    assert best is not None
    return {**best, "n": len(scores), "with_prompts_metric": mean(with_prompts),
            "zero_shot_metric": mean(without),
            "abstain_rate": sum(s < best["threshold"] for s in scores) / len(scores)}


def thresholds_by_kind(kinds: list[str], scores: list[float], with_prompts: list[float],
                       without: list[float]) -> dict[str, dict[str, Any]]:
    """`choose_threshold` on each answer kind's queries alone (kind -> its result)."""
    if not (len(kinds) == len(scores) == len(with_prompts) == len(without)):
        raise ValueError(f"calibration needs equal lists (got {len(kinds)} kinds for "
                         f"{len(scores)} scores)")
    out = {}
    for kind in sorted(set(kinds)):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        out[kind] = choose_threshold([scores[i] for i in rows], [with_prompts[i] for i in rows],
                                     [without[i] for i in rows])
    return out


def applied_thresholds(calibration: dict[str, Any]) -> tuple[float, dict[str, float] | None]:
    """What a run applies from a `calibrate` result that records its "abstain_by": the overall
    threshold, and with 'kind' the threshold per answer kind (JSON-read infinities included)."""
    threshold = float(calibration["threshold"])
    if calibration.get("abstain_by") != "kind":
        return threshold, None
    if "by_kind" not in calibration:
        raise ValueError("this abstention calibration has no per-kind thresholds (it predates "
                         "--abstain-by kind); delete it to recalibrate")
    return threshold, {kind: float(c["threshold"]) for kind, c in calibration["by_kind"].items()}


def calibration_queries(stage: StageData, data_dir: Any, seed: int,
                        per_task: int | None) -> list[Query]:
    """Validation queries of the training clusters, minus anything in the pool or the training
    queries (tasks without a train split had part of that split carved into them)."""
    used = {p.id for p in stage.pool} | {q.id for q in stage.train_queries}
    out: list[Query] = []
    for cluster in stage.manifest["train_clusters"]:
        fresh = [q for q in evaluation_queries(cluster, data_dir, seed, None) if q.id not in used]
        by_task: dict[str, list[Query]] = {}
        for q in fresh:
            by_task.setdefault(q.task, []).append(q)
        for task, qs in sorted(by_task.items()):
            rng = random.Random(f"{seed}:calibration:{task}")
            out += qs if per_task is None or len(qs) <= per_task else rng.sample(qs, per_task)
    if not out:
        raise ValueError("no calibration queries: the training clusters "
                         f"{stage.manifest['train_clusters']} have no unused validation data")
    return out


def calibrate(lm: Predictor, retriever_dir: str, queries: list[Query], k: int, batch_size: int = 16,
              progress: bool = True) -> dict[str, Any]:
    """Evaluates the LM with/without the trained retriever's prompts; returns the threshold
    (and, under "by_kind", one per answer kind)."""
    from serve import PromptRetriever

    scored = top_scores(PromptRetriever.from_pretrained(retriever_dir), queries, k,
                        exclude_own_cluster=True)
    values = {}
    for name, demos in (("with", [[h.text for h in reversed(r)] for _, r in scored]),
                        ("without", [[] for _ in queries])):
        preds = lm.predict(queries, demos, batch_size=batch_size, progress=progress)
        values[name] = metric_values(queries, preds)
    scores = [s for s, _ in scored]
    result = choose_threshold(scores, values["with"], values["without"])
    result["by_kind"] = thresholds_by_kind([query_kind(q) for q in queries], scores,
                                           values["with"], values["without"])
    result["tasks"] = sorted({q.task for q in queries})
    log.info("abstention threshold %.4f (calibration metric %.3f on %d queries); per kind %s",
             result["threshold"], result["calibration_metric"], result["n"],
             {kind: cal["threshold"] for kind, cal in result["by_kind"].items()})
    return result


def abstain_effect(cluster_averages: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per cluster (method -> average): does `trained+abstain` remove regressions (trained <
    zero-shot) and keep gains (trained > zero-shot)?"""
    rows, removed, kept, regressions, gains = {}, 0, 0, 0, 0
    for cluster, avg in sorted(cluster_averages.items()):
        zero, trained, abstain = avg["zero_shot"], avg["trained"], avg[ABSTAIN]
        row = {"zero_shot": zero, "trained": trained, ABSTAIN: abstain,
               "regression": trained < zero, "gain": trained > zero}
        row["regression_removed"] = row["regression"] and abstain >= zero
        row["gain_kept"] = row["gain"] and abstain >= trained
        regressions, gains = regressions + row["regression"], gains + row["gain"]
        removed, kept = removed + row["regression_removed"], kept + row["gain_kept"]
        rows[cluster] = row
    return {"clusters": rows, "regressions": regressions, "regressions_removed": removed,
            "gains": gains, "gains_kept": kept}
