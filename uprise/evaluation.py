"""Evaluate one LM on held-out queries under several prompt-selection methods.

Contract: a *method* maps queries to demonstrations, `list[list[str]]`, one list per query with
the best prompt LAST (nearest the input; empty = zero-shot). Every method is evaluated with the
same LM on the same queries; the report holds, per method and task, the metric and the number
of examples, cluster averages, and a paired bootstrap 95% CI of each method minus zero-shot.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from statistics import mean
from typing import Any

from flan_data import Prompt, Query, example_metric, get_task
from uprise.stats import paired_bootstrap

log = logging.getLogger(__name__)

Method = Callable[[list[Query]], list[list[str]]]


def zero_shot(queries: list[Query]) -> list[list[str]]:
    return [[] for _ in queries]


def random_prompts(pool: list[Prompt], k: int, seed: int) -> Method:
    """k pool prompts per query, a fresh seeded sample per query."""
    from retriever import RandomRetriever

    baseline = RandomRetriever(pool, seed=seed)

    def method(queries: list[Query]) -> list[list[str]]:
        hits = baseline.retrieve([q.input for q in queries], k)
        return [[pool[i].text for i, _ in reversed(row)] for row in hits]

    return method


def retrieved_prompts(retriever_dir: str, k: int) -> Method:
    """Top-k prompts of an exported retriever (trained or not), best placed last."""
    from serve import PromptRetriever

    prompt_retriever = PromptRetriever.from_pretrained(retriever_dir)

    def method(queries: list[Query]) -> list[list[str]]:
        hits = prompt_retriever.retrieve_batch([q.input for q in queries], k=k)
        return [[h.text for h in reversed(row)] for row in hits]

    return method


def evaluate_methods(
    lm: Any,
    queries: list[Query],
    methods: dict[str, Method],
    batch_size: int = 16,
    max_new_tokens: int = 32,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Returns (report, per-example predictions by method)."""
    from proxy_lm import predict

    values: dict[str, list[float]] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    for name, method in methods.items():
        log.info("evaluating %s on %d queries", name, len(queries))
        demos = method(queries)
        preds = predict(lm, queries, demos, batch_size=batch_size,
                        max_new_tokens=max_new_tokens, progress=progress)
        values[name] = [example_metric(get_task(q.task).metric, q, p.prediction)
                        for q, p in zip(queries, preds, strict=True)]
        predictions[name] = [
            {"query_id": q.id, "task": q.task, "prediction": p.text, "value": v,
             "n_prompts": len(d)}
            for q, p, v, d in zip(queries, preds, values[name], demos, strict=True)
        ]
    return summarise(queries, values), predictions


def summarise(queries: list[Query], values: dict[str, list[float]]) -> dict[str, Any]:
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(queries):
        by_task[q.task].append(i)
    tasks = {
        t: {"cluster": get_task(t).cluster, "metric": get_task(t).metric, "n": len(idx)}
        for t, idx in sorted(by_task.items())
    }
    results = {}
    for name, vals in values.items():
        per_task = {t: mean(vals[i] for i in idx) for t, idx in sorted(by_task.items())}
        clusters: dict[str, list[float]] = defaultdict(list)
        for t, v in per_task.items():
            clusters[tasks[t]["cluster"]].append(v)
        results[name] = {
            "tasks": per_task,
            "clusters": {c: mean(v) for c, v in clusters.items()},
            "average": mean(per_task.values()),
        }
        if "zero_shot" in values and name != "zero_shot":
            results[name]["vs_zero_shot"] = paired_bootstrap(vals, values["zero_shot"])
    return {"tasks": tasks, "methods": results}


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: one row per task plus the average, one column per method, and the
    paired-bootstrap difference to zero-shot with its 95% CI (all in points)."""
    methods = list(report["methods"])
    ci = []
    for m in methods:
        d = report["methods"][m].get("vs_zero_shot")
        ci.append(f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f},{100 * d['high']:+.1f}]"
                  if d else "")
    width = max([12, *map(len, ci), *map(len, methods)])
    rows = [(task, info["metric"], str(info["n"]),
             [f"{100 * report['methods'][m]['tasks'][task]:.1f}" for m in methods])
            for task, info in report["tasks"].items()]
    rows.append(("average", "", "", [f"{100 * report['methods'][m]['average']:.1f}"
                                     for m in methods]))
    rows.append(("vs zero-shot", "", "", ci))
    lines = [f"{task:16s} {metric:12s} {n:>5s} " + " ".join(f"{c:>{width}s}" for c in cells)
             for task, metric, n, cells in [("task", "metric", "n", methods), *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
