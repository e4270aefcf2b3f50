"""The held-out-cluster protocol: pool, training queries, candidates and evaluation queries.

Contract (UPRISE, Cheng et al. 2023, sec. 3): for a held-out cluster, the prompt pool and the
training queries come from the *other* clusters' training data only; each training query gets
`n_candidates` prompts sampled from the pool of its own task, never itself (optionally
`cross_cluster` of them from the other training clusters' prompts instead: the situation of a
held-out query, which has no demonstration of its own task); evaluation queries come from the
held-out cluster's evaluation split. `check_no_leakage` enforces the first rule
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
from flan_data.examples import SourceExample, balanced_sample, convert_rows, fits
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
    dev_queries: list[Query] = field(default_factory=list)


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
    carved, _ = carve_rows(task, len(rows), seed, carve_fraction)
    examples = convert_rows(
        task, task.eval_split, [rows[i] for i in carved], seed, carved, max_prompt_chars
    )
    carve = {"task": task.name, "split": task.eval_split, "rows": len(rows), "carved": len(carved)}
    return examples, carve


def carve_rows(task: Task, n_rows: int, seed: int, fraction: float) -> tuple[list[int], list[int]]:
    """(carved, kept) row indices of a task's evaluation split, each sorted: a seeded
    `fraction` of the rows is carved out to feed the pool, the rest stays evaluation data."""
    order = list(range(n_rows))
    _rng(seed, "carve", task.name).shuffle(order)
    cut = int(round(n_rows * fraction))
    return sorted(order[:cut]), sorted(order[cut:])


def sample_candidates(
    queries: list[Query], pool: list[Prompt], n_candidates: int, seed: int,
    cross_cluster: int = 0,
) -> list[Candidates]:
    """`n_candidates` prompts per query, never the query's own example: `cross_cluster` of them
    drawn from the prompts of the other clusters in the pool, the rest from its own task.
    `cross_cluster=0` is the paper's rule (same task only) and draws exactly what it always did.
    Raises ValueError when `cross_cluster` exceeds `n_candidates`, or when a query's cluster is
    the only one in the pool."""
    if not 0 <= cross_cluster <= n_candidates:
        raise ValueError(f"cross_cluster_candidates {cross_cluster}: expected an integer in "
                         f"[0, n_candidates = {n_candidates}]")
    by_task: dict[str, list[str]] = {}
    by_cluster: dict[str, list[str]] = {}
    for p in pool:
        by_task.setdefault(p.task, []).append(p.id)
        by_cluster.setdefault(p.cluster, []).append(p.id)
    foreign_of: dict[str, list[str]] = {}  # per query cluster, built once (pool-sized lists)
    out = []
    for q in queries:
        others = [pid for pid in by_task.get(q.task, []) if pid != q.id]
        k = min(n_candidates - cross_cluster, len(others))
        picked = _rng(seed, "candidates", q.id).sample(others, k)
        if cross_cluster:
            if q.cluster not in foreign_of:
                foreign_of[q.cluster] = [pid for c, ids in sorted(by_cluster.items())
                                         if c != q.cluster for pid in ids]
            foreign = foreign_of[q.cluster]
            if not foreign:
                raise ValueError(
                    f"cross_cluster_candidates {cross_cluster}: the pool has no prompt outside "
                    f"cluster {q.cluster!r} (query {q.id}); train on two or more clusters or "
                    "set it to 0")
            picked += _rng(seed, "cross-candidates", q.id).sample(
                foreign, min(cross_cluster, len(foreign)))
        out.append(Candidates(q.id, picked))
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
    cross_cluster_candidates: int = 0,
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
    candidates = sample_candidates(train_queries, pool, n_candidates, seed,
                                   cross_cluster_candidates)
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
        "cross_cluster_candidates": cross_cluster_candidates,
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
    carve_fraction: float = 0.5,
    dev_size: int = 0,
) -> StageData:
    """In-task data (EPR-style, the easiest rung): pool and training queries from one task's
    training split, evaluation queries from its evaluation split. `dev_size` > 0 withholds that
    many rows of the training split from pool and training queries as development queries
    (`withhold_dev`), on which a choice between recipes can be made without looking at the
    evaluation split. Labelled `mode: in_task` in the manifest; there is no held-out cluster.
    Where the source lacks the training split but has another split besides the evaluation one
    (the mirror's E2E NLG, ARC: validation), that split feeds pool and queries (`pool_split` in
    the manifest). A task with nothing but its evaluation split (the mirror's DART, CommonGen)
    is carved (`in_task_carve`): a seeded `carve_fraction` of its rows feeds pool and queries,
    the other rows are evaluated, less any whose input equals a carved row's; the carve is
    recorded under `carves`."""
    task = get_task(task_name)
    split = in_task_source_split(task, data_dir)
    if split is None:
        split = task.eval_split
        examples, eval_queries, carve = in_task_carve(task, data_dir, seed, carve_fraction,
                                                      eval_size, max_prompt_chars)
    else:
        rows = load_rows(task, split, data_dir)
        examples = convert_rows(task, split, rows, seed, None, max_prompt_chars)
        eval_queries, carve = task_evaluation_queries(task, data_dir, seed, eval_size), None
    examples, dev = withhold_dev(task, examples, dev_size, seed)
    pool = [e.to_prompt() for e in balanced_sample(examples, pool_size,
                                                   _rng(seed, "pool", task.name))]
    picked = balanced_sample(examples, queries, _rng(seed, "queries", task.name))
    train_queries = [e.to_query() for e in picked]
    candidates = sample_candidates(train_queries, pool, n_candidates, seed)
    manifest = {
        "mode": "in_task", "task": task.name, "held_out_cluster": None, "pool_split": split,
        "train_clusters": [task.cluster], "data_source": str(data_dir) if data_dir else "hub",
        "seed": seed, "pool_per_task": pool_size, "queries_per_task": queries,
        "n_candidates": n_candidates, "eval_per_task": eval_size,
        "max_prompt_chars": max_prompt_chars, "carves": [carve] if carve else [],
        "dev_per_task": dev_size,
        "counts": {"pool": len(pool), "train_queries": len(train_queries),
                   "eval_queries": len(eval_queries), **({"dev_queries": len(dev)} if dev else {})},
    }
    return StageData(pool, train_queries, eval_queries, candidates, manifest,
                     [e.to_query() for e in dev])


def withhold_dev(task: Task, examples: list[SourceExample], dev_size: int, seed: int,
                 ) -> tuple[list[SourceExample], list[SourceExample]]:
    """(the examples left for pool and training queries, `dev_size` development examples in
    source order). Whole inputs are withheld, seeded: every row whose template fields equal a
    development row's leaves the pool too (E2E and CommonGen give one input several
    references; a development query must not find its own input among the demonstrations)."""
    if not dev_size:
        return examples, []
    groups: dict[tuple, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(_fields_key(e), []).append(i)
    order = list(groups.values())
    _rng(seed, "dev", task.name).shuffle(order)
    withheld: list[int] = []
    for rows in order:
        if len(withheld) >= dev_size:
            break
        withheld += rows
    if len(withheld) < dev_size or len(withheld) == len(examples):
        raise ValueError(f"in-task {task.name!r}: --dev-per-task {dev_size} needs more rows than "
                         f"the {len(examples)} of its pool's source leave; lower it.")
    out = set(withheld)
    dev = sorted(withheld[:dev_size])
    return [e for i, e in enumerate(examples) if i not in out], [examples[i] for i in dev]


def in_task_source_split(task: Task, data_dir: Path | None) -> str | None:
    """The split in-task pool and training queries come from: the task's training split, else
    the first other split that is not its evaluation split (sorted: e.g. validation when the
    evaluation split is test); None when the evaluation split is all there is (carve it)."""
    splits = available_splits(task, data_dir)
    if task.train_split and task.train_split in splits:
        return task.train_split
    others = sorted(s for s in splits if s != task.eval_split)
    return others[0] if others else None


def in_task_carve(task: Task, data_dir: Path | None, seed: int, carve_fraction: float,
                  eval_size: int | None, max_prompt_chars: int | None,
                  ) -> tuple[list[SourceExample], list[Query], dict[str, Any]]:
    """(examples for pool and training queries, evaluation queries, the carve's record) of a
    task with only its evaluation split: carved rows feed the pool, the kept rows are sampled
    for evaluation after dropping those whose template fields equal a carved row's (CommonGen
    repeats a concept set once per reference; one input must not be demonstration and query)."""
    rows = load_rows(task, task.eval_split, data_dir)
    carved, kept = carve_rows(task, len(rows), seed, carve_fraction)
    source = convert_rows(task, task.eval_split, [rows[i] for i in carved], seed, carved)
    seen = {_fields_key(e) for e in source}  # every carved row, also those too long to keep
    held = convert_rows(task, task.eval_split, [rows[i] for i in kept], seed, kept)
    fresh = [e for e in held if _fields_key(e) not in seen]
    if not fresh:
        raise ValueError(
            f"in-task {task.name!r}: --carve-fraction {carve_fraction} of its only split "
            f"{task.eval_split!r} ({len(rows)} rows) leaves no evaluation rows; lower it.")
    examples = [e for e in source if fits(e, max_prompt_chars)]
    carve = {"task": task.name, "split": task.eval_split, "rows": len(rows),
             "fraction": carve_fraction, "carved": len(carved),
             "eval_dropped_as_duplicates": len(held) - len(fresh)}
    return examples, [e.to_query() for e in _eval_sample(task, fresh, seed, eval_size)], carve


def in_task_carved_ids(manifest: dict[str, Any]) -> set[str]:
    """Example ids of the rows an in-task build carved out of the evaluation split for its pool
    (re-derived from the manifest's seed and carve); empty when nothing was carved."""
    ids = set()
    for carve in manifest.get("carves", []) if manifest.get("mode") == "in_task" else []:
        task = get_task(carve["task"])
        carved, _ = carve_rows(task, carve["rows"], manifest["seed"], carve["fraction"])
        ids |= {f"{task.name}:{carve['split']}:{i}" for i in carved}
    return ids


def _fields_key(example: SourceExample) -> tuple:
    """A row's input, independent of the template it was rendered with."""
    return tuple(sorted(example.example.fields.items()))


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
    return [e.to_query() for e in _eval_sample(task, examples, seed, per_task)]


def _eval_sample(task: Task, examples: list[SourceExample], seed: int,
                 per_task: int | None) -> list[SourceExample]:
    """A seeded sample of `per_task` examples (None: all), in source order."""
    if per_task is None or len(examples) <= per_task:
        return examples
    keep = set(_rng(seed, "eval", task.name).sample(range(len(examples)), per_task))
    return [e for i, e in enumerate(examples) if i in keep]
