"""The ranking section of `uprise eval`: do the retrievers order prompts the way the LM does on
held-out-cluster queries?

Contract: `ranking_section(lm, eval_queries, pool, rankers, ...)` samples `per_task` held-out
queries per task and one shared sample of `n_prompts` pool prompts (all from training clusters:
cross-task by construction) and has the LM score every (prompt, query) pair with
`score_candidates` (resumable shards in a folder of `work_dir` named by a hash of the LM and the
sampled query and prompt ids, so other settings or other evaluation rows never clash with a
finished folder; the score cache makes reruns free). It then asks every ranker for its relevance
of each pair and returns each ranker's per-query ranking quality against the LM's scores
(`retriever.ranking`: NDCG@3, top-1 agreement, Spearman) with paired bootstrap 95% CIs against
`reference` (the untrained encoder), stratified by task. This does not depend on whether the
evaluated LM's accuracy moves at all, so it says where the signal dies.

A ranker is `f(query_texts, prompt_texts) -> (n_queries, n_prompts) relevance`; `dense_ranker`,
`bm25_ranker` and `random_ranker` build the usual ones, `interpolated_ranker` the trained
retriever's weights averaged with its start's (`retriever.interpolate`), `hybrid_ranker` the
hybrid method's (`serve.hybrid`: its relevance over the retriever's whole pool, read at the
section's prompts, so it orders them exactly as the method would). `lm_score_matrix` and
`judge_rankers` are the section's two halves after scoring, for other callers of the same
statistic (`bench/ranking_ceiling.py`, `bench/wise_ranking.py`). The section's intervals resample
its queries; `crossed_bootstrap` resamples its prompts as well, for a claim about the pool rather
than about the section's one draw of prompts (`bench/section_exports.py --crossed`), and
`interval` pools the draws of several independent sections (`bench/pooled_ranking.py`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from flan_data.schema import Candidates, Prompt, Query
from uprise.evaluation.stats import group_index, paired_bootstrap

Ranker = Callable[[list[str], list[str]], np.ndarray]


def dense_ranker(export_dir: str | Path) -> Ranker:
    """Inner products of an exported retriever's query and prompt towers."""
    from retriever.export import load_retriever_encoder

    return encoder_ranker(load_retriever_encoder(export_dir, device="cpu")[0])


def interpolated_ranker(trained_dir: str | Path, untrained_dir: str | Path,
                        alpha: float) -> Ranker:
    """Inner products of the trained retriever's weights interpolated with its start's
    (`retriever.interpolate`: alpha 1 is `trained`, 0 is `untrained`)."""
    from retriever.interpolate import load_interpolated

    return encoder_ranker(load_interpolated(trained_dir, untrained_dir, alpha, device="cpu")[0])


def encoder_ranker(st: Any) -> Ranker:
    """Inner products of a loaded two-tower SentenceTransformer's query and prompt towers."""

    def rank(queries: list[str], prompts: list[str]) -> np.ndarray:
        q = st.encode_query(queries, convert_to_numpy=True)  # (n_q, dim)
        p = st.encode_document(prompts, convert_to_numpy=True)  # (n_p, dim)
        return q @ p.T  # (n_q, n_p)

    return rank


def bm25_ranker(queries: list[str], prompts: list[str]) -> np.ndarray:
    """BM25 scores of every prompt for every query (0 where BM25 finds no term in common)."""
    from retriever.baselines import BM25Retriever

    out = np.zeros((len(queries), len(prompts)))  # (n_q, n_p)
    for row, hits in enumerate(BM25Retriever(prompts).retrieve(queries, len(prompts))):
        for col, score in hits:
            out[row, col] = score
    return out


def hybrid_ranker(export_dir: str | Path, weight: float) -> Ranker:
    """The hybrid method's relevance (trained retriever and BM25, each z-scored over the
    export's whole pool, mixed with `weight`) of each prompt, found in the pool by its text."""
    from serve import PromptRetriever
    from serve.hybrid import HybridRetriever

    hybrid = HybridRetriever(PromptRetriever.from_pretrained(str(export_dir), device="cpu"),
                             weight)
    row: dict[str, int] = {}
    for i, p in enumerate(hybrid.prompts):
        row.setdefault(p.text, i)

    def rank(queries: list[str], prompts: list[str]) -> np.ndarray:
        missing = sum(t not in row for t in prompts)
        if missing:
            raise KeyError(f"{missing} of {len(prompts)} ranking prompts are not in the pool of "
                           f"{export_dir}; rank prompts of the pool the retriever indexes.")
        return hybrid.relevance(queries)[:, [row[t] for t in prompts]]  # (n_q, n_p)

    return rank


def random_ranker(seed: int) -> Ranker:
    """Seeded random relevance: the chance level of every metric."""

    def rank(queries: list[str], prompts: list[str]) -> np.ndarray:
        return np.random.default_rng(seed).random((len(queries), len(prompts)))

    return rank


def standard_rankers(trained_dir: str | Path | None, untrained_dir: str | Path,
                     seed: int, hybrid_weight: float | None = None) -> dict[str, Ranker]:
    """random, bm25, untrained, (when given) trained and (with a weight too) hybrid: the
    rankers of `uprise eval`."""
    rankers = {"random": random_ranker(seed), "bm25": bm25_ranker,
               "untrained": dense_ranker(untrained_dir)}
    if trained_dir is not None:
        rankers["trained"] = dense_ranker(trained_dir)
        if hybrid_weight is not None:
            rankers["hybrid"] = hybrid_ranker(trained_dir, hybrid_weight)
    return rankers


def sample_queries(queries: list[Query], per_task: int, seed: int) -> list[Query]:
    """Up to `per_task` queries of each task, seeded, in input order."""
    by_task: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        by_task.setdefault(q.task, []).append(i)
    keep: set[int] = set()
    for task, rows in sorted(by_task.items()):
        keep |= set(random.Random(f"{seed}:ranking-queries:{task}").sample(
            rows, min(per_task, len(rows))))
    return [q for i, q in enumerate(queries) if i in keep]


def ranking_section(lm: Any, eval_queries: list[Query], pool: list[Prompt],
                    rankers: dict[str, Ranker], work_dir: str | Path, per_task: int = 20,
                    n_prompts: int = 20, seed: int = 42, reference: str = "untrained",
                    batch_size: int = 16, progress: bool = True) -> dict[str, Any]:
    """LM-judged ranking quality of every ranker on held-out queries (module docstring)."""
    from proxy_lm import score_candidates

    if per_task < 1 or n_prompts < 2:
        raise ValueError(f"per_task={per_task}, n_prompts={n_prompts}; expected >= 1 and >= 2.")
    if reference not in rankers:
        raise ValueError(f"reference ranker {reference!r} is not among {sorted(rankers)}.")
    queries = sample_queries(eval_queries, per_task, seed)
    prompts = random.Random(f"{seed}:ranking-prompts").sample(pool, min(n_prompts, len(pool)))
    folder = pairs_folder(work_dir, lm.name, queries, prompts)
    scores = score_candidates(lm, {q.id: q for q in queries}, {p.id: p for p in prompts},
                              [Candidates(q.id, [p.id for p in prompts]) for q in queries],
                              folder, batch_size=batch_size, progress=progress)
    lm_scores = lm_score_matrix(scores, queries, prompts)  # (n_q, n_p)
    texts = [q.input for q in queries], [p.text for p in prompts]
    relevance = {name: rank(*texts) for name, rank in rankers.items()}
    return {"n_queries": len(queries), "n_prompts": len(prompts), "per_task": per_task,
            "seed": seed, "score_folder": folder.name, "reference": reference, "lm": lm.name,
            "methods": judge_rankers(relevance, lm_scores, [q.task for q in queries], reference,
                                     seed)}


def pairs_folder(work_dir: str | Path, lm_name: str, queries: list[Query],
                 prompts: list[Prompt]) -> Path:
    """`work_dir/<tag>`: the score folder of `queries` x `prompts` by `lm_name`, named by a
    hash of the three, so that another sample scores into its own folder."""
    key = "\0".join([lm_name, *(q.id for q in queries), "", *(p.id for p in prompts)])
    return Path(work_dir) / hashlib.sha256(key.encode()).hexdigest()[:12]


def judge_rankers(relevance: dict[str, np.ndarray], lm_scores: np.ndarray, tasks: list[str],
                  reference: str, seed: int) -> dict[str, dict[str, dict[str, Any]]]:
    """Each ranker's per-query ranking quality against `lm_scores` (n_q, n_p), from its
    relevance (n_q, n_p): per metric the mean, n, the mean per task and, but for `reference`,
    `vs_<reference>` (paired bootstrap stratified by `tasks`). A query drops out of a pair where
    either value is undefined (Spearman of a constant relevance row)."""
    from retriever.ranking import METRICS

    values = {name: _per_query(rel, lm_scores) for name, rel in relevance.items()}
    methods: dict[str, dict[str, dict[str, Any]]] = {}
    for name, got in values.items():
        methods[name] = {}
        for metric in METRICS:
            ok = ~np.isnan(got[metric]) & ~np.isnan(values[reference][metric])
            row = {"mean": _mean(got[metric][ok]), "n": int(ok.sum()),
                   "by_task": {t: _mean(got[metric][(np.asarray(tasks) == t) & ok])
                               for t in sorted(set(tasks))}}
            if name != reference and ok.any():
                row["vs_" + reference] = paired_bootstrap(
                    got[metric][ok], values[reference][metric][ok],
                    groups=[t for t, keep in zip(tasks, ok, strict=True) if keep], seed=seed)
            methods[name][metric] = row
    return methods


def crossed_bootstrap(relevance: dict[str, np.ndarray], reference: str, lm_scores: np.ndarray,
                      tasks: list[str], n_resamples: int = 1000, seed: int = 0,
                      level: float = 0.95, resample_prompts: bool = True,
                      ) -> dict[str, dict[str, dict[str, float]]]:
    """Every ranker's difference to `reference` per metric, {name: {metric: {"diff", "low",
    "high"}}}, with an interval that treats the section's prompts as a sample too
    (`crossed_resamples`; with `resample_prompts=False` it is `paired_bootstrap` of the
    per-query values, to the digit)."""
    pairs = [(name, reference) for name in relevance if name != reference]
    got = crossed_resamples(relevance, pairs, lm_scores, tasks, n_resamples, seed,
                            resample_prompts)
    return {name: {m: interval([drawn], level) for m, drawn in got[name, ref].items()}
            for name, ref in pairs}


def crossed_resamples(relevance: dict[str, np.ndarray], pairs: list[tuple[str, str]],
                      lm_scores: np.ndarray, tasks: list[str], n_resamples: int = 1000,
                      seed: int = 0, resample_prompts: bool = True,
                      ) -> dict[tuple[str, str], dict[str, tuple[float, np.ndarray]]]:
    """For each (name, reference) of `pairs` and each metric: the section's difference of the
    two rankers' task-stratified mean (tasks weighing the same as in `paired_bootstrap`) and its
    `n_resamples` bootstrap draws, {(name, reference): {metric: (diff, draws)}}. Each resample
    draws the prompts with replacement (one draw for every query: the pigeonhole bootstrap of a
    crossed design, Owen 2007), recomputes every per-query metric on those columns, and draws
    the queries with replacement within their task (the queries only with `resample_prompts`
    false); every pair sees the same draws. A query whose metric is undefined in a resample (a
    constant row) drops out of that resample's task mean."""
    import warnings

    from retriever.ranking import METRICS

    n_q, n_p = lm_scores.shape
    names = list(dict.fromkeys(n for pair in pairs for n in pair))
    point = {name: _per_query(relevance[name], lm_scores) for name in names}
    values = {(n, m): np.broadcast_to(point[n][m], (n_resamples, n_q)) for n in names
              for m in METRICS}  # the same columns in every resample, unless drawn below
    if resample_prompts:
        prompt_rng = np.random.default_rng([seed, 1])  # apart from the query draws below
        values = {key: np.empty((n_resamples, n_q)) for key in values}
        for r in range(n_resamples):
            cols = prompt_rng.integers(0, n_p, n_p)
            for name in names:
                got = _per_query(relevance[name][:, cols], lm_scores[:, cols])
                for m in METRICS:
                    values[name, m][r] = got[m]
    groups = list(group_index(tasks, n_q).values())  # paired_bootstrap's strata, in its order
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(g), (n_resamples, len(g))) for g in groups]
    out: dict[tuple[str, str], dict[str, tuple[float, np.ndarray]]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a task with no defined value
        for name, ref in pairs:
            out[name, ref] = {}
            for m in METRICS:
                d = point[name][m] - point[ref][m]  # (n_q,)
                diffs = values[name, m] - values[ref, m]  # (resamples, n_q)
                stat = np.nanmean([np.nanmean(np.take_along_axis(diffs[:, g], idx, axis=1),
                                              axis=1)
                                   for g, idx in zip(groups, draws, strict=True)], axis=0)
                out[name, ref][m] = (float(np.nanmean([np.nanmean(d[g]) for g in groups])),
                                     stat)
    return out


def interval(parts: list[tuple[float, np.ndarray]], level: float = 0.95) -> dict[str, float]:
    """{"diff", "low", "high"} of the equal-weight mean of independent estimates, each a
    (point, bootstrap draws) of `crossed_resamples` with the same number of draws: the mean of
    the points, and the percentile interval of the draws averaged resample by resample (one
    part: that part's own interval)."""
    if not parts or len({len(draws) for _, draws in parts}) != 1:
        raise ValueError("interval: expected at least one part, all with the same number of "
                         f"draws; got {[len(draws) for _, draws in parts]}")
    tail = (1 - level) / 2 * 100
    stat = np.mean([draws for _, draws in parts], axis=0)
    low, high = np.nanpercentile(stat, [tail, 100 - tail])
    return {"diff": float(np.mean([point for point, _ in parts])), "low": float(low),
            "high": float(high)}


def add_crossed(judged: dict[str, dict[str, dict[str, Any]]], relevance: dict[str, np.ndarray],
                reference: str, names: list[str], lm_scores: np.ndarray, tasks: list[str],
                n_resamples: int = 1000, seed: int = 0) -> None:
    """Adds `crossed_bootstrap`'s interval of each of `names` against `reference` to a
    `judge_rankers(..., reference, ...)` result, in place, beside its `vs_<reference>` as
    `vs_<reference>_crossed`."""
    wide = crossed_bootstrap({n: relevance[n] for n in [reference, *names]}, reference,
                             lm_scores, tasks, n_resamples, seed)
    for name, by_metric in wide.items():
        for metric, ci in by_metric.items():
            judged[name][metric][f"vs_{reference}_crossed"] = ci


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def lm_score_matrix(scores: list, queries: list[Query], prompts: list[Prompt]) -> np.ndarray:
    """The LM's score of every (query, prompt) pair, (n_q, n_p) in the given orders; NaN where
    `scores` has no record of a pair."""
    row = {q.id: i for i, q in enumerate(queries)}
    col = {p.id: j for j, p in enumerate(prompts)}
    out = np.full((len(queries), len(prompts)), np.nan)  # (n_q, n_p)
    for s in scores:
        out[row[s.query_id], col[s.prompt_id]] = s.score
    return out


def _per_query(relevance: np.ndarray, lm_scores: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    from retriever.ranking import ranking_metrics

    got = ranking_metrics(torch.as_tensor(relevance, dtype=torch.float64),
                          torch.as_tensor(lm_scores, dtype=torch.float64),
                          torch.as_tensor(~np.isnan(lm_scores)))
    return {name: v.numpy() for name, v in got.items()}
