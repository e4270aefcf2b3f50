"""Summarising per-example values into the evaluation report (the dict `report.py` renders).

Contract: `summarise(queries, values)` takes, per method, one metric value per query and returns
`{"tasks": {task: {cluster, metric, n}}, "methods": {method: {tasks, clusters, cluster_ci,
average, vs_zero_shot?, vs_best_baseline?}}, "best_baseline"}`: per-task means, cluster averages
(mean of task means, each with a bootstrap 95% CI), the overall average, and paired bootstrap 95%
CIs of each method minus zero-shot and minus the best baseline (the best of `BASELINES` by
average). `prediction_changes` adds how often each method's prompts change the LM's answer
against zero-shot; `paper_metrics` the paper's corpus-level metric where it differs. Bootstraps
are stratified by task and seeded.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Any

from flan_data import Query, get_task
from uprise.evaluation.methods import BASELINES
from uprise.evaluation.stats import paired_bootstrap


def prediction_changes(queries: list[Query], predictions: dict[str, list[dict[str, Any]]],
                       seed: int = 0) -> dict[str, dict[str, Any]]:
    """How much each method's prompts move the evaluated LM: per method, the share of queries
    whose answer (the option for choice tasks, the text otherwise) differs from zero-shot's,
    with a task-stratified bootstrap 95% CI, and how many of those changes fixed a wrong
    zero-shot answer or broke a right one (metric value up or down). Empty without zero-shot."""
    base = predictions.get("zero_shot")
    if base is None:
        return {}
    groups = [q.task for q in queries]

    def answer(row: dict[str, Any]) -> Any:
        return row["option"] if row["option"] is not None else row["prediction"].strip()

    out = {}
    for name, rows in predictions.items():
        if name == "zero_shot":
            continue
        pairs = list(zip(rows, base, strict=True))
        changed = [float(answer(r) != answer(z)) for r, z in pairs]
        ci = paired_bootstrap(changed, [0.0] * len(changed), seed=seed, groups=groups)
        out[name] = {"rate": ci["diff"], "low": ci["low"], "high": ci["high"],
                     "n": len(changed), "changed": int(sum(changed)),
                     "fixed": sum(r["value"] > z["value"] for r, z in pairs),
                     "broken": sum(r["value"] < z["value"] for r, z in pairs)}
    return out


def paper_metrics(queries: list[Query], options: list[int | None]) -> dict[str, dict[str, Any]]:
    """Per task in `flan_data.metrics.PAPER_METRICS`: the paper's corpus-level metric."""
    from flan_data.metrics import PAPER_METRICS, corpus_metric

    by_task: dict[str, tuple[list[int], list[int]]] = {}
    for q, option in zip(queries, options, strict=True):
        if q.task in PAPER_METRICS and q.gold is not None and option is not None:
            golds, preds = by_task.setdefault(q.task, ([], []))
            golds.append(q.gold)
            preds.append(option)
    return {t: {"metric": PAPER_METRICS[t], "value": corpus_metric(PAPER_METRICS[t], g, p)}
            for t, (g, p) in sorted(by_task.items())}


def best_baseline(averages: dict[str, float]) -> str | None:
    """The non-trained method (`BASELINES`) with the highest average; ties go to the first."""
    present = [m for m in BASELINES if m in averages]
    return max(present, key=lambda m: averages[m]) if present else None


def _method_summary(vals: list[float], by_task: dict[str, list[int]],
                    tasks: dict[str, dict[str, Any]], seed: int) -> dict[str, Any]:
    per_task = {t: mean(vals[i] for i in idx) for t, idx in by_task.items()}
    members: dict[str, list[int]] = defaultdict(list)
    for t, idx in by_task.items():
        members[tasks[t]["cluster"]] += idx
    clusters, cluster_ci = {}, {}
    for c, idx in sorted(members.items()):
        labels = _labels(by_task, idx)
        ci = paired_bootstrap([vals[i] for i in idx], [0.0] * len(idx), seed=seed, groups=labels)
        clusters[c] = ci["diff"]
        cluster_ci[c] = [ci["low"], ci["high"]]
    return {"tasks": per_task, "clusters": clusters, "cluster_ci": cluster_ci,
            "average": mean(per_task.values())}


def _labels(by_task: dict[str, list[int]], idx: list[int]) -> list[str]:
    owner = {i: t for t, members in by_task.items() for i in members}
    return [owner[i] for i in idx]


def summarise(queries: list[Query], values: dict[str, list[float]],
              seed: int = 0) -> dict[str, Any]:
    """Per-task means, cluster averages (mean of task means) and the paired bootstraps."""
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(queries):
        by_task[q.task].append(i)
    by_task = dict(sorted(by_task.items()))
    tasks = {t: {"cluster": get_task(t).cluster, "metric": get_task(t).metric, "n": len(idx)}
             for t, idx in by_task.items()}
    groups = [q.task for q in queries]
    results = {name: _method_summary(vals, by_task, tasks, seed) for name, vals in values.items()}
    best = best_baseline({m: r["average"] for m, r in results.items()})
    for name, vals in values.items():
        if "zero_shot" in values and name != "zero_shot":
            results[name]["vs_zero_shot"] = paired_bootstrap(
                vals, values["zero_shot"], seed=seed, groups=groups)
        if best is not None and name != best:
            results[name]["vs_best_baseline"] = paired_bootstrap(
                vals, values[best], seed=seed, groups=groups)
    return {"tasks": tasks, "methods": results, "best_baseline": best}
