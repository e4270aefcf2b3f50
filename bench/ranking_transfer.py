"""What cross-task training can see of the held-out ranking section's LM preferences: rankers
for `bench/ranking_ceiling.py` built only from training-cluster LM scores (its docstring says
which, and `transfer_rankers` puts them together). Scores the section's prompts on the run
folder's training queries when asked (resumable shards, the score cache shared).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flan_data import read_stage_data
from flan_data.protocol import StageData
from flan_data.schema import Candidates, Prompt, Query, Score
from flan_data.score_folder import read_scores
from uprise.evaluation.ranking import judge_rankers, lm_score_matrix, pairs_folder

log = logging.getLogger(__name__)
CURVE_SIZES = (10, 20, 40, 80, 160, 320)
RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
Encode = Callable[[list[str]], np.ndarray]


def zscored(scores: np.ndarray) -> np.ndarray:
    """Each row standardised over its non-NaN entries; NaN stays NaN, and a row with fewer
    than two distinct values becomes all NaN (it says nothing about an order)."""
    out = np.full_like(scores, np.nan)
    for i, row in enumerate(scores):
        ok = ~np.isnan(row)
        if ok.sum() >= 2 and row[ok].std() > 0:
            out[i, ok] = (row[ok] - row[ok].mean()) / row[ok].std()
    return out


def nan_mean_rows(z: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The mean of `z`'s `rows` per column over the non-NaN entries; 0 where none."""
    picked = z[rows]
    n = (~np.isnan(picked)).sum(axis=0)
    return np.where(n > 0, np.nansum(picked, axis=0) / np.maximum(n, 1), 0.0)


def cross_knn_mean(z: np.ndarray, train_emb: np.ndarray, query_emb: np.ndarray,
                   k: int) -> np.ndarray:
    """Entry (i, j): the mean of `z[:, j]` (training queries x prompts, NaN where unscored) over
    the k training queries that scored prompt j and whose embeddings have the largest inner
    product with held-out query i's (all of them when fewer scored it; 0 when none did)."""
    sim = query_emb @ train_emb.T  # (n_q, n_t)
    out = np.zeros((len(query_emb), z.shape[1]))  # (n_q, n_p)
    for j in range(z.shape[1]):
        scored = np.flatnonzero(~np.isnan(z[:, j]))
        if scored.size:
            order = np.argsort(-sim[:, scored], axis=1, kind="stable")[:, :k]  # (n_q, <=k)
            out[:, j] = z[scored[order], j].mean(axis=1)
    return out


def train_side_scores(lm_name: str, lm_dtype: str, train_queries: list[Query],
                      prompts: list[Prompt], out_dir: Path, batch_size: int) -> np.ndarray:
    """The LM's scores of `prompts` on `train_queries`, (n_t, n_p), NaN where the prompt is from
    the query's own cluster; scored into resumable shards under `pairs_folder(out_dir, ...)`."""
    from proxy_lm import load_lm, score_candidates

    lm = load_lm(lm_name, dtype=lm_dtype)
    folder = pairs_folder(out_dir, lm.name, train_queries, prompts)
    keep = [Candidates(q.id, [p.id for p in prompts if p.cluster != q.cluster])
            for q in train_queries]
    records = score_candidates(lm, {q.id: q for q in train_queries},
                               {p.id: p for p in prompts}, [c for c in keep if c.prompt_ids],
                               folder, batch_size=batch_size)
    log.info("%d training-side pairs in %s", len(records), folder)
    return lm_score_matrix(records, train_queries, prompts)


def subsample_curve(z: np.ndarray, scores: np.ndarray, tasks: list[str],
                    sizes: tuple[int, ...] = CURVE_SIZES, reps: int = 20,
                    seed: int = 42) -> dict[str, dict[str, float]]:
    """How many scored training queries `train_prompt_mean` needs: for each size m, `reps`
    seeded draws of m rows of `z` (training queries x prompts), each draw's prompt means judged
    against the held-out `scores` as a ranker; per m the mean and standard deviation over the
    draws of NDCG@3 and Spearman (the spread of the estimate, not a CI over queries)."""
    rng = np.random.default_rng(seed)
    out = {}
    for m in [m for m in sizes if m < len(z)]:
        got = {"ndcg@3": [], "spearman": []}
        for _ in range(reps):
            values = nan_mean_rows(z, rng.choice(len(z), m, replace=False))
            judged = judge_rankers({"p": np.tile(values, (len(scores), 1))}, scores, tasks, "p",
                                   seed)["p"]
            for metric, found in got.items():
                found.append(judged[metric]["mean"])
        out[str(m)] = {f"{metric}_{stat}": float(fn(found)) for metric, found in got.items()
                       for stat, fn in (("mean", np.mean), ("sd", np.std))}
    return out


def ridge_loo(x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...] = RIDGE_ALPHAS
              ) -> tuple[float, np.ndarray, float]:
    """Ridge regression of y (n,) on x (n, d) with an unpenalised intercept, the penalty
    picked from `alphas` by the closed-form leave-one-out squared error; returns (alpha,
    coef (d,), intercept)."""
    xm, ym = x.mean(axis=0), y.mean()
    u, sv, vt = np.linalg.svd(x - xm, full_matrices=False)
    uy = u.T @ (y - ym)
    best = None
    for alpha in alphas:
        shrink = sv ** 2 / (sv ** 2 + alpha)  # (r,)
        fitted = u @ (shrink * uy)
        leverage = (u ** 2) @ shrink + 1.0 / len(y)  # the intercept's share too
        loo = float((((y - ym - fitted) / (1.0 - leverage)) ** 2).mean())
        if best is None or loo < best[0]:
            best = (loo, alpha, vt.T @ (sv / (sv ** 2 + alpha) * uy))
    _, alpha, coef = best
    return alpha, coef, float(ym - xm @ coef)


def cross_cluster_z(records: list[Score], pool: dict[str, Prompt],
                    cluster_of: dict[str, str]) -> list[tuple[str, float]]:
    """(prompt id, z) of every scored pair whose prompt is from another cluster than its query,
    z standardised over that query's cross-cluster pairs (`zscored`; a query with fewer than
    two distinct scores gives none)."""
    by_query: dict[str, list[Score]] = {}
    for s in records:
        if pool[s.prompt_id].cluster != cluster_of[s.query_id]:
            by_query.setdefault(s.query_id, []).append(s)
    return [(s.prompt_id, float(z)) for found in by_query.values()
            for s, z in zip(found, zscored(np.array([[s.score for s in found]]))[0],
                            strict=True) if not np.isnan(z)]


def task_prior(rows: list[tuple[str, float]], pool: dict[str, Prompt],
               prompts: list[Prompt]) -> np.ndarray:
    """Each of `prompts`: the mean z of the `rows` (prompt id, z) whose prompt shares its task;
    0 (the mean) for a task with none."""
    by_task: dict[str, list[float]] = {}
    for pid, z in rows:
        by_task.setdefault(pool[pid].task, []).append(z)
    return np.array([np.mean(by_task[p.task]) if p.task in by_task else 0.0 for p in prompts])


def prior_stage_data(prior_dir: Path, held_out: str, prompts: list[Prompt]) -> StageData:
    """`prior_dir`'s stage data, refused unless it holds out the same cluster (its training
    scores would otherwise include held-out queries) and its pool holds the section's prompts."""
    stage = read_stage_data(prior_dir / "data")
    if stage.manifest.get("held_out_cluster") != held_out:
        raise SystemExit(f"{prior_dir}/data holds out {stage.manifest.get('held_out_cluster')!r},"
                         f" not {held_out!r}: its training scores could include {held_out} "
                         "queries; pass a folder of the same held-out cluster")
    ids = {p.id for p in stage.pool}
    if any(p.id not in ids for p in prompts):
        raise SystemExit(f"{prior_dir}/data: its pool lacks the section's prompts; pass a "
                         "folder built from the same pool (same clusters, seed, sizes)")
    return stage


def prompt_priors(prior_dir: Path, held_out: str, prompts: list[Prompt],
                  encode_prompts: Encode) -> tuple[dict[str, np.ndarray], dict]:
    """`prior_task` and `prior_ridge` values (n_p,) of `prompts` from `prior_dir`'s scored
    cross-cluster training pairs, leaving out every pair of the section's own prompts (so the
    priors are judged on prompts they never saw scored), and what they were fitted on. The
    ridge regression fits each prompt's mean z (leave-one-prompt-out penalty)."""
    stage = prior_stage_data(prior_dir, held_out, prompts)
    pool = {p.id: p for p in stage.pool}
    section = {p.id for p in prompts}
    every = cross_cluster_z(read_scores(prior_dir / "scores"), pool,
                            {q.id: q.cluster for q in stage.train_queries})
    rows = [r for r in every if r[0] not in section]
    if not rows:
        raise SystemExit(f"{prior_dir}/scores: no query has two or more scored cross-cluster "
                         "candidates; build it with --cross-cluster-candidates N")
    by_prompt: dict[str, list[float]] = {}
    for pid, z in rows:
        by_prompt.setdefault(pid, []).append(z)
    unique = sorted(by_prompt)
    x = encode_prompts([pool[pid].text for pid in unique])  # (n_scored, dim)
    alpha, coef, intercept = ridge_loo(x, np.array([np.mean(by_prompt[p]) for p in unique]))
    fitted = {"prior_dir": str(prior_dir), "n_pairs": len(rows), "n_prompts": len(unique),
              "ridge_alpha": alpha, "ridge_alpha_at_grid_edge": alpha == RIDGE_ALPHAS[-1],
              "section_prompts_left_out": len(section & {pid for pid, _ in every}),
              "tasks_of_section_prompts_scored":
              sum(p.task in {pool[i].task for i in unique} for p in prompts)}
    ridge = encode_prompts([p.text for p in prompts]) @ coef + intercept  # (n_p,)
    return {"prior_task": task_prior(rows, pool, prompts), "prior_ridge": ridge}, fitted


def transfer_rankers(held_out: str, lm: tuple[str, str], train_queries: list[Query],
                     prompts: list[Prompt], scores: np.ndarray, tasks: list[str],
                     encode: tuple[Encode, Encode], query_emb: np.ndarray,
                     train_scores_dir: Path | None, prior_dir: Path | None,
                     knn: tuple[int, ...], batch_size: int, seed: int) -> tuple[dict, dict]:
    """The `train_*` rankers (when `train_scores_dir` is given: the section's `prompts` scored
    there on `train_queries` by `lm`, (name, dtype)) and the `prior_*` ones (from `prior_dir`),
    each (n_q, n_p) for the held-out queries of `scores` (embedded as `query_emb`; `encode`:
    the untrained (query, prompt) towers), and what they were built from."""
    encode_queries, encode_prompts = encode
    rankers, extra = {}, {}
    n_q = len(scores)
    priors: dict[str, np.ndarray] = {}
    if prior_dir is not None:  # first: it checks its folder before any scoring
        priors, fitted = prompt_priors(prior_dir, held_out, prompts, encode_prompts)
    if train_scores_dir is not None:
        z = zscored(train_side_scores(*lm, train_queries, prompts, train_scores_dir,
                                      batch_size))  # (n_t, n_p)
        rankers["train_prompt_mean"] = np.tile(nan_mean_rows(z, np.arange(len(z))), (n_q, 1))
        train_emb = encode_queries([q.input for q in train_queries])  # (n_t, dim)
        for k in knn:
            rankers[f"train_knn{k}"] = cross_knn_mean(z, train_emb, query_emb, k)
        extra = {"n_train_queries": int((~np.isnan(z)).any(axis=1).sum()),
                 "n_train_pairs": int((~np.isnan(z)).sum()),
                 "train_prompt_mean_by_n_queries": subsample_curve(z, scores, tasks, seed=seed)}
    if prior_dir is not None:
        extra["prior"] = fitted
        rankers.update({name: np.tile(v, (n_q, 1)) for name, v in priors.items()})
    return rankers, extra
