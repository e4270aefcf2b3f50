"""The held-out-cluster protocol: pool, training queries, candidates and evaluation queries.

Contract (UPRISE, Cheng et al. 2023, sec. 3): for a held-out cluster, the prompt pool and the
training queries come from the *other* clusters' training data only; each training query gets
`n_candidates` prompts sampled from the pool of its own task, never itself; evaluation queries
come from the held-out cluster's evaluation split. `check_no_leakage` enforces the first rule
and runs on every build. Where a training task's source lacks a train split, a seeded fraction
of its evaluation split is carved out for it, and the carve is recorded in the manifest.
Every random choice uses a `random.Random` seeded from (`seed`, purpose, task).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flan_data.catalogue import Task, clusters, get_task, tasks_in
from flan_data.examples import SourceExample, balanced_sample, convert_rows
from flan_data.loading import available_splits, load_rows
from flan_data.schema import Candidates, Prompt, Query

log = logging.getLogger(__name__)


class LeakageError(RuntimeError):
    """Held-out-cluster data reached the pool, the candidates or the training queries."""


@dataclass
class StageData:
    pool: list[Prompt]
    train_queries: list[Query]
    eval_queries: list[Query]
    candidates: list[Candidates]
    manifest: dict[str, Any] = field(default_factory=dict)


def _rng(seed: int, purpose: str, task: str) -> random.Random:
    return random.Random(f"{seed}:{purpose}:{task}")


def check_clusters(held_out_cluster: str, train_clusters: list[str] | None) -> list[str]:
    """Validates names; returns the training clusters (default: every other cluster)."""
    tasks_in(held_out_cluster)  # raises UnknownNameError with the known names
    if train_clusters is None:
        return [c for c in clusters() if c != held_out_cluster]
    for c in train_clusters:
        tasks_in(c)
    if held_out_cluster in train_clusters:
        raise ValueError(
            f"held-out cluster {held_out_cluster!r} is also listed in train_clusters "
            f"{train_clusters}; remove it from train_clusters (its data must never reach the pool)."
        )
    return list(train_clusters)


def training_examples(
    task: Task,
    data_dir: Path | None,
    seed: int,
    carve_fraction: float,
    max_prompt_chars: int | None,
) -> tuple[list[SourceExample], dict[str, Any] | None]:
    """A training task's examples, carving from its eval split when there is no train split."""
    splits = available_splits(task, data_dir)
    if task.train_split and task.train_split in splits:
        rows = load_rows(task, task.train_split, data_dir)
        return convert_rows(task, task.train_split, rows, seed, None, max_prompt_chars), None
    rows = load_rows(task, task.eval_split, data_dir)
    order = list(range(len(rows)))
    _rng(seed, "carve", task.name).shuffle(order)
    carved = sorted(order[: int(round(len(rows) * carve_fraction))])
    examples = convert_rows(
        task, task.eval_split, [rows[i] for i in carved], seed, carved, max_prompt_chars
    )
    carve = {"task": task.name, "split": task.eval_split, "rows": len(rows), "carved": len(carved)}
    return examples, carve


def sample_candidates(
    queries: list[Query], pool: list[Prompt], n_candidates: int, seed: int
) -> list[Candidates]:
    """`n_candidates` same-task prompts per query, excluding the query's own example."""
    by_task: dict[str, list[str]] = {}
    for p in pool:
        by_task.setdefault(p.task, []).append(p.id)
    out = []
    for q in queries:
        others = [pid for pid in by_task.get(q.task, []) if pid != q.id]
        k = min(n_candidates, len(others))
        out.append(Candidates(q.id, _rng(seed, "candidates", q.id).sample(others, k)))
    return out


def check_no_leakage(
    held_out_cluster: str,
    pool: list[Prompt],
    train_queries: list[Query],
    candidates: list[Candidates],
) -> None:
    held_tasks = {t.name for t in tasks_in(held_out_cluster)}
    leaks = [p.id for p in pool if p.cluster == held_out_cluster or p.task in held_tasks]
    leaks += [q.id for q in train_queries if q.cluster == held_out_cluster or q.task in held_tasks]
    leaks += [
        pid for c in candidates for pid in [c.query_id, *c.prompt_ids]
        if pid.split(":", 1)[0] in held_tasks
    ]
    if leaks:
        raise LeakageError(
            f"{len(leaks)} record(s) of held-out cluster {held_out_cluster!r} reached the pool, "
            f"training queries or candidates (first: {leaks[:3]}). This is a bug; please report it."
        )


def build_stage_data(
    held_out_cluster: str,
    data_dir: Path | None,
    train_clusters: list[str] | None = None,
    seed: int = 42,
    pool_per_task: int | None = 1000,
    queries_per_task: int | None = 200,
    n_candidates: int = 50,
    eval_per_task: int | None = None,
    carve_fraction: float = 0.5,
    max_prompt_chars: int | None = 1500,
) -> StageData:
    """Builds the data of one held-out-cluster run (see the module docstring)."""
    train_clusters = check_clusters(held_out_cluster, train_clusters)
    pool, train_queries, carves = [], [], []
    for task in (t for c in train_clusters for t in tasks_in(c)):
        examples, carve = training_examples(task, data_dir, seed, carve_fraction, max_prompt_chars)
        carves += [carve] if carve else []
        in_pool = balanced_sample(examples, pool_per_task, _rng(seed, "pool", task.name))
        pool += [e.to_prompt() for e in in_pool]
        picked = balanced_sample(examples, queries_per_task, _rng(seed, "queries", task.name))
        train_queries += [e.to_query() for e in picked]
    if not pool:
        raise ValueError(
            f"empty prompt pool: training clusters {train_clusters} gave no examples from "
            f"{data_dir or 'the Hub'}; check --data-dir and --train-clusters."
        )
    candidates = sample_candidates(train_queries, pool, n_candidates, seed)
    check_no_leakage(held_out_cluster, pool, train_queries, candidates)
    eval_queries = evaluation_queries(held_out_cluster, data_dir, seed, eval_per_task)
    manifest = {
        "held_out_cluster": held_out_cluster,
        "train_clusters": train_clusters,
        "data_source": str(data_dir) if data_dir else "hub",
        "seed": seed,
        "pool_per_task": pool_per_task,
        "queries_per_task": queries_per_task,
        "n_candidates": n_candidates,
        "eval_per_task": eval_per_task,
        "carve_fraction": carve_fraction,
        "max_prompt_chars": max_prompt_chars,
        "carves": carves,
        "counts": {"pool": len(pool), "train_queries": len(train_queries),
                   "eval_queries": len(eval_queries)},
    }
    return StageData(pool, train_queries, eval_queries, candidates, manifest)


def build_in_task_data(
    task_name: str,
    data_dir: Path | None,
    seed: int = 42,
    pool_size: int | None = 1000,
    queries: int | None = 200,
    n_candidates: int = 50,
    eval_size: int | None = None,
    max_prompt_chars: int | None = 1500,
) -> StageData:
    """In-task data (EPR-style, the easiest rung): pool and training queries from one task's
    training split, evaluation queries from its evaluation split. Labelled `mode: in_task` in
    the manifest; there is no held-out cluster. Where the source lacks the training split but
    has another split besides the evaluation one (the mirror's E2E NLG, ARC: validation), that
    split feeds pool and queries (`pool_split` in the manifest); a task with nothing but its
    evaluation split is refused (its evaluation rows would have to feed the pool)."""
    task = get_task(task_name)
    split = in_task_source_split(task, data_dir)
    rows = load_rows(task, split, data_dir)
    examples = convert_rows(task, split, rows, seed, None, max_prompt_chars)
    pool = [e.to_prompt() for e in balanced_sample(examples, pool_size,
                                                   _rng(seed, "pool", task.name))]
    picked = balanced_sample(examples, queries, _rng(seed, "queries", task.name))
    train_queries = [e.to_query() for e in picked]
    candidates = sample_candidates(train_queries, pool, n_candidates, seed)
    eval_queries = task_evaluation_queries(task, data_dir, seed, eval_size)
    manifest = {
        "mode": "in_task", "task": task.name, "held_out_cluster": None, "pool_split": split,
        "train_clusters": [task.cluster], "data_source": str(data_dir) if data_dir else "hub",
        "seed": seed, "pool_per_task": pool_size, "queries_per_task": queries,
        "n_candidates": n_candidates, "eval_per_task": eval_size,
        "max_prompt_chars": max_prompt_chars, "carves": [],
        "counts": {"pool": len(pool), "train_queries": len(train_queries),
                   "eval_queries": len(eval_queries)},
    }
    return StageData(pool, train_queries, eval_queries, candidates, manifest)


def in_task_source_split(task: Task, data_dir: Path | None) -> str:
    """The split in-task pool and training queries come from: the task's training split, else
    the first other split that is not its evaluation split (sorted: e.g. validation when the
    evaluation split is test)."""
    splits = available_splits(task, data_dir)
    if task.train_split and task.train_split in splits:
        return task.train_split
    others = sorted(s for s in splits if s != task.eval_split)
    if not others:
        raise ValueError(
            f"in-task mode needs a training split or another split besides the evaluation "
            f"split {task.eval_split!r}; {task.name!r} has only {sorted(splits)} in "
            f"{data_dir or 'the Hub'}. Pick a task with one (`uprise data --list`, and the "
            "mirror's README lists the splits).")
    return others[0]


def evaluation_queries(
    cluster: str, data_dir: Path | None, seed: int, per_task: int | None
) -> list[Query]:
    """The held-out cluster's evaluation queries (a seeded sample of `per_task` per task)."""
    return [q for task in tasks_in(cluster) for q in task_evaluation_queries(task, data_dir, seed,
                                                                            per_task)]


def task_evaluation_queries(
    task: Task, data_dir: Path | None, seed: int, per_task: int | None
) -> list[Query]:
    """One task's evaluation queries: a seeded sample of `per_task` (None: all), source order."""
    rows = load_rows(task, task.eval_split, data_dir)
    examples = convert_rows(task, task.eval_split, rows, seed)
    if per_task is not None and len(examples) > per_task:
        keep = set(_rng(seed, "eval", task.name).sample(range(len(examples)), per_task))
        examples = [e for i, e in enumerate(examples) if i in keep]
    return [e.to_query() for e in examples]
