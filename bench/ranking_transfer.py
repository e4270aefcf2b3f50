"""What cross-task training can see of the held-out ranking section's LM preferences: rankers
for `bench/ranking_ceiling.py` built only from training-cluster LM scores (its docstring says
which, and `transfer_rankers` puts them together). Scores the section's prompts on the run
folder's training queries when asked (resumable shards, the score cache shared).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from flan_data import read_stage_data
from flan_data.score_folder import read_scores
from uprise.evaluation.ranking import judge_rankers, lm_score_matrix

CURVE_SIZES = (10, 20, 40, 80, 160, 320)
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
    """Row i: `nan_mean_rows` of `z` (training queries x prompts) over the k training queries
    whose embeddings have the largest inner product with held-out query i's."""
    sim = query_emb @ train_emb.T  # (n_q, n_t)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]  # (n_q, k)
    return np.stack([nan_mean_rows(z, rows) for rows in nearest])


def train_side_scores(cluster_dir: Path, config: dict, train_queries: list, prompts: list,
                      out_dir: Path, batch_size: int) -> np.ndarray:
    """The LM's scores of `prompts` on `train_queries`, (n_t, n_p), NaN where the prompt is from
    the query's own cluster; scored into resumable shards under `out_dir/<tag>`."""
    import hashlib

    from flan_data.schema import Candidates
    from proxy_lm import load_lm, score_candidates

    lm = load_lm(config["lm"], dtype=config["lm_dtype"])
    key = "\0".join([lm.name, *(q.id for q in train_queries), "", *(p.id for p in prompts)])
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    keep = [Candidates(q.id, [p.id for p in prompts if p.cluster != q.cluster])
            for q in train_queries]
    records = score_candidates(lm, {q.id: q for q in train_queries},
                               {p.id: p for p in prompts}, [c for c in keep if c.prompt_ids],
                               out_dir / tag, batch_size=batch_size)
    print(f"{cluster_dir}: {len(records)} training-side pairs in {out_dir / tag}")
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


def ridge_loo(x: np.ndarray, y: np.ndarray,
              alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)
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


def cross_cluster_z(records: list, pool: dict, cluster_of: dict[str, str]) -> list[tuple]:
    """(prompt id, z) of every scored pair whose prompt is from another cluster than its query,
    z standardised over that query's cross-cluster pairs (`zscored`; a query with fewer than
    two distinct scores gives none)."""
    by_query: dict[str, list] = {}
    for s in records:
        if pool[s.prompt_id].cluster != cluster_of[s.query_id]:
            by_query.setdefault(s.query_id, []).append(s)
    return [(s.prompt_id, float(z)) for found in by_query.values()
            for s, z in zip(found, zscored(np.array([[s.score for s in found]]))[0],
                            strict=True) if not np.isnan(z)]


def task_prior(rows: list[tuple], pool: dict, prompts: list) -> np.ndarray:
    """Each of `prompts`: the mean z of the `rows` (prompt id, z) whose prompt shares its task;
    0 (the mean) for a task with none."""
    by_task: dict[str, list[float]] = {}
    for pid, z in rows:
        by_task.setdefault(pool[pid].task, []).append(z)
    return np.array([np.mean(by_task[p.task]) if p.task in by_task else 0.0 for p in prompts])


def prompt_priors(prior_dir: Path, prompts: list, encode_prompts: Encode) -> tuple[dict, dict]:
    """`prior_task` and `prior_ridge` values (n_p,) of `prompts` from `prior_dir`'s scored
    cross-cluster training pairs (module docstring), and what they were fitted on."""
    prior_stage = read_stage_data(prior_dir / "data")
    pool = {p.id: p for p in prior_stage.pool}
    if any(p.id not in pool for p in prompts):
        raise SystemExit(f"{prior_dir}/data: its pool lacks the section's prompts; pass a "
                         "folder built from the same pool (same clusters, seed, sizes)")
    rows = cross_cluster_z(read_scores(prior_dir / "scores"), pool,
                           {q.id: q.cluster for q in prior_stage.train_queries})
    if not rows:
        raise SystemExit(f"{prior_dir}/scores: no query has two or more scored cross-cluster "
                         "candidates; build it with --cross-cluster-candidates N")
    pids, z = [r[0] for r in rows], np.array([r[1] for r in rows])
    unique = sorted(set(pids))
    emb = dict(zip(unique, encode_prompts([pool[pid].text for pid in unique]), strict=True))
    alpha, coef, intercept = ridge_loo(np.stack([emb[pid] for pid in pids]), z)
    fitted = {"prior_dir": str(prior_dir), "n_pairs": len(z), "n_prompts": len(unique),
              "ridge_alpha": alpha,
              "tasks_of_section_prompts_scored": sum(p.task in {pool[i].task for i in unique}
                                                     for p in prompts)}
    return {"prior_task": task_prior(rows, pool, prompts),
            "prior_ridge": encode_prompts([p.text for p in prompts]) @ coef + intercept}, fitted

def transfer_rankers(cluster_dir: Path, config: dict, train_queries: list, prompts: list,
                     scores: np.ndarray, tasks: list[str], encode_queries: Encode,
                     query_emb: np.ndarray, encode_prompts: Encode,
                     train_scores_dir: Path | None, prior_dir: Path | None,
                     knn: tuple[int, ...], batch_size: int, seed: int) -> tuple[dict, dict]:
    """The `train_*` rankers (when `train_scores_dir` is given: the section's `prompts` scored
    there on `train_queries`) and the `prior_*` ones (from `prior_dir`), each (n_q, n_p) for the
    held-out queries of `scores` (embedded as `query_emb`), and what they were built from."""
    rankers, extra = {}, {}
    n_q = len(scores)
    priors = {}
    if prior_dir is not None:  # first: it checks its folder before any scoring
        priors, fitted = prompt_priors(prior_dir, prompts, encode_prompts)
    if train_scores_dir is not None:
        z = zscored(train_side_scores(cluster_dir, config, train_queries, prompts,
                                      train_scores_dir, batch_size))
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
