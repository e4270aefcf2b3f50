"""Evaluate one LM on held-out queries under several prompt-selection methods.

Contract: a *method* maps queries to demonstrations, `list[list[str]]`, one list per query with
the best prompt LAST (nearest the input; empty = zero-shot). Every method is evaluated with the
same LM on the same queries; the report holds, per method and task, the metric and the number
of examples, cluster averages (each with a bootstrap 95% CI), the overall average, and paired
bootstrap 95% CIs of each method minus zero-shot and minus the best baseline (the best
non-trained method by average, `BASELINES`), and how often each method's prompts change the
LM's answer against zero-shot (`changed_vs_zero_shot`: an LM that ignores its prompts cannot
show a retriever's worth). Bootstraps are stratified by task and seeded.
The LM is a `proxy_lm.LanguageModel` or any object with a `predict(queries, demonstrations,
batch_size=, max_new_tokens=, progress=)` method (e.g. `uprise.api_lm.ApiLM`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from statistics import mean
from typing import Any

from flan_data import Prompt, Query, example_metric, get_task
from retriever.index import PROMPTS_FILE
from uprise.stats import paired_bootstrap

log = logging.getLogger(__name__)

Method = Callable[[list[Query]], list[list[str]]]
BASELINES = ("zero_shot", "random", "bm25", "untrained")
"""Methods that use no trained retriever; the best of them by average is the 'best baseline'."""


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


def bm25_prompts(pool: list[Prompt], k: int) -> Method:
    """The k pool prompts with the highest BM25 score for the query input, best placed last."""
    from retriever import BM25Retriever

    baseline = BM25Retriever(pool)

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


def check_pool_leakage(queries: list[Query], pool: list[Prompt],
                       retriever_dirs: list[str | Path] = (), in_task: bool = False) -> None:
    """Raises `LeakageError` if a prompt of the pool (or of a retriever's index) is one of the
    evaluated queries, or comes from their tasks or clusters (the BM25 and random baselines
    draw from `pool`; the dense retrievers from their index's prompts.jsonl). `in_task` (the
    EPR-style mode) allows the evaluated task's prompts but none from its evaluated split."""
    from flan_data import LeakageError, read_jsonl

    ids, tasks = {q.id for q in queries}, {q.task for q in queries}
    clusters = {q.cluster for q in queries}
    splits = {q.id.rsplit(":", 1)[0] for q in queries}  # "<task>:<split>" of each query
    sources = {"pool": pool}
    sources.update({str(d): read_jsonl(Path(d) / PROMPTS_FILE, Prompt) for d in retriever_dirs})
    for where, prompts in sources.items():
        leaks = [p.id for p in prompts if p.id in ids or (
            p.id.rsplit(":", 1)[0] in splits if in_task
            else p.task in tasks or p.cluster in clusters)]
        if leaks:
            raise LeakageError(
                f"{len(leaks)} prompt(s) of {where} belong to the evaluated tasks/clusters "
                f"{sorted(clusters)} (first: {leaks[:3]}); evaluate with a pool and retriever "
                "built with these clusters held out.")


def run_predictions(lm: Any, queries: list[Query], demos: list[list[str]], batch_size: int,
                    max_new_tokens: int, progress: bool) -> list[Any]:
    """`lm.predict(...)` when the LM has one (API models), else `proxy_lm.predict(lm, ...)`."""
    if hasattr(lm, "predict"):
        return lm.predict(queries, demos, batch_size=batch_size, max_new_tokens=max_new_tokens,
                          progress=progress)
    from proxy_lm import predict

    return predict(lm, queries, demos, batch_size=batch_size, max_new_tokens=max_new_tokens,
                   progress=progress)


def evaluate_methods(
    lm: Any,
    queries: list[Query],
    methods: dict[str, Method],
    batch_size: int = 16,
    max_new_tokens: int = 32,
    progress: bool = True,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Returns (report, per-example predictions by method); `seed` seeds the bootstraps."""
    values: dict[str, list[float]] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    for name, method in methods.items():
        log.info("evaluating %s on %d queries", name, len(queries))
        demos = method(queries)
        preds = run_predictions(lm, queries, demos, batch_size, max_new_tokens, progress)
        values[name] = [example_metric(get_task(q.task).metric, q, p.prediction)
                        for q, p in zip(queries, preds, strict=True)]
        predictions[name] = [
            {"query_id": q.id, "task": q.task, "prediction": p.text, "value": v,
             "n_prompts": len(d), "parsed": getattr(p, "parsed", True),
             "option": p.prediction if q.is_choice else None}
            for q, p, v, d in zip(queries, preds, values[name], demos, strict=True)
        ]
    report = summarise(queries, values, seed=seed)
    for name, change in prediction_changes(queries, predictions, seed=seed).items():
        report["methods"][name]["changed_vs_zero_shot"] = change
    for name, rows in predictions.items():
        report["methods"][name]["unparsable"] = sum(not r["parsed"] for r in rows)
        extra = paper_metrics(queries, [r["option"] for r in rows])
        if extra:
            report["methods"][name]["paper_metrics"] = extra
    return report, predictions


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


def _ci_cells(report: dict[str, Any], methods: list[str], key: str) -> list[str]:
    cells = []
    for m in methods:
        d = report["methods"][m].get(key)
        cells.append(f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f},{100 * d['high']:+.1f}]"
                     if d else "")
    return cells


def changed_cell(result: dict[str, Any]) -> str:
    """'rate [low,high]' in % of queries whose answer differs from zero-shot's, or ''."""
    c = result.get("changed_vs_zero_shot")
    return f"{100 * c['rate']:.1f} [{100 * c['low']:.1f},{100 * c['high']:.1f}]" if c else ""


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: one row per task plus the average, one column per method, and the
    paired-bootstrap difference to zero-shot (and to the best baseline, when that is another
    method) with its 95% CI (all in points)."""
    methods = list(report["methods"])
    extra = [("vs zero-shot", _ci_cells(report, methods, "vs_zero_shot"))]
    if report.get("best_baseline") not in (None, "zero_shot"):
        extra.append((f"vs {report['best_baseline']}",
                      _ci_cells(report, methods, "vs_best_baseline")))
    width = max([12, *map(len, methods), *(len(c) for _, cells in extra for c in cells)])
    rows = [(task, info["metric"], str(info["n"]),
             [f"{100 * report['methods'][m]['tasks'][task]:.1f}" for m in methods])
            for task, info in report["tasks"].items()]
    rows.append(("average", "", "", [f"{100 * report['methods'][m]['average']:.1f}"
                                     for m in methods]))
    rows += [(label, "", "", cells) for label, cells in extra]
    if any("changed_vs_zero_shot" in report["methods"][m] for m in methods):
        rows.append(("changed vs zs", "", "",
                     [changed_cell(report["methods"][m]) for m in methods]))
    lines = [f"{task:16s} {metric:12s} {n:>5s} " + " ".join(f"{c:>{width}s}" for c in cells)
             for task, metric, n, cells in [("task", "metric", "n", methods), *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
