"""Evaluate one LM on held-out queries under several prompt-selection methods.

Contract: every method (`methods.py`) is evaluated with the same `Predictor` on the same
queries; a method whose demonstrations equal an earlier method's for every query (e.g. a
trained retriever exported with its starting weights, beside the untrained one) reuses that
method's predictions instead of asking the LM again. `evaluate_methods` returns the report of
`summary.summarise` (plus, per method, `changed_vs_zero_shot`, `unparsable` and
`paper_metrics`) and the per-example predictions by method, which `write_predictions` writes as
`predictions/<method>.jsonl` (`read_predictions` reads them back). `check_pool_leakage` refuses,
before anything runs, a pool or retriever index holding prompts of the evaluated queries' tasks
or clusters.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flan_data import Prediction, Prompt, Query, example_metric, get_task, write_jsonl
from uprise.evaluation.methods import Method
from uprise.evaluation.predictors import Predictor
from uprise.evaluation.summary import paper_metrics, prediction_changes, summarise

log = logging.getLogger(__name__)
PREDICTIONS_DIR = "predictions"
PREDICTION_FIELDS = ("query_id", "task", "prediction", "value", "n_prompts", "parsed", "option")
"""The keys of every row of a predictions file."""


def check_pool_leakage(queries: list[Query], pool: list[Prompt],
                       retriever_dirs: list[str | Path] = (), in_task: bool = False,
                       carved_ids: set[str] | frozenset[str] = frozenset()) -> None:
    """Raises `LeakageError` if a prompt of the pool (or of a retriever's index) is one of the
    evaluated queries, or comes from their tasks or clusters (the BM25 and random baselines
    draw from `pool`; the dense retrievers from their index's prompts.jsonl). `in_task` (the
    EPR-style mode) allows the evaluated task's prompts but none from its evaluated split,
    except the rows carved out of it for the pool (`carved_ids`, of a task with no other
    split; `flan_data.protocol.in_task_carved_ids`)."""
    from flan_data import LeakageError, read_jsonl
    from retriever import PROMPTS_FILE

    ids, tasks = {q.id for q in queries}, {q.task for q in queries}
    clusters = {q.cluster for q in queries}
    splits = {q.id.rsplit(":", 1)[0] for q in queries}  # "<task>:<split>" of each query
    sources = {"pool": pool}
    sources.update({str(d): read_jsonl(Path(d) / PROMPTS_FILE, Prompt) for d in retriever_dirs})
    for where, prompts in sources.items():
        leaks = [p.id for p in prompts if p.id in ids or (
            p.id.rsplit(":", 1)[0] in splits and p.id not in carved_ids if in_task
            else p.task in tasks or p.cluster in clusters)]
        if leaks:
            raise LeakageError(
                f"{len(leaks)} prompt(s) of {where} belong to the evaluated tasks/clusters "
                f"{sorted(clusters)} (first: {leaks[:3]}); evaluate with a pool and retriever "
                "built with these clusters held out.")


def metric_values(queries: list[Query], predictions: list[Prediction]) -> list[float]:
    """Each query's metric (its task's, `flan_data.example_metric`) for its prediction."""
    return [example_metric(get_task(q.task).metric, q, p.prediction)
            for q, p in zip(queries, predictions, strict=True)]


def evaluate_methods(
    lm: Predictor,
    queries: list[Query],
    methods: dict[str, Method],
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    progress: bool = True,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Returns (report, per-example predictions by method); `seed` seeds the bootstraps."""
    values: dict[str, list[float]] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    answered: dict[tuple[tuple[str, ...], ...], tuple[str, list[Prediction]]] = {}
    for name, method in methods.items():
        demos = method(queries)
        key = tuple(tuple(d) for d in demos)
        if key in answered:
            log.info("%s gives the prompts of %s for all %d queries; reusing its predictions",
                     name, answered[key][0], len(queries))
            preds = answered[key][1]
        else:
            log.info("evaluating %s on %d queries", name, len(queries))
            preds = lm.predict(queries, demos, batch_size=batch_size,
                               max_new_tokens=max_new_tokens, progress=progress)
            answered[key] = (name, preds)
        values[name] = metric_values(queries, preds)
        predictions[name] = [
            {"query_id": q.id, "task": q.task, "prediction": p.text, "value": v,
             "n_prompts": len(d), "parsed": p.parsed,
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


def write_predictions(predictions: dict[str, list[dict[str, Any]]], out: str | Path) -> None:
    """Writes each method's per-example rows (`evaluate_methods`) to
    out/predictions/<method>.jsonl."""
    for name, rows in predictions.items():
        write_jsonl(Path(out) / PREDICTIONS_DIR / f"{name}.jsonl", rows)


def read_predictions(out: str | Path, method: str) -> list[dict[str, Any]]:
    """One method's rows as `write_predictions` wrote them to out/predictions/<method>.jsonl,
    in the evaluation's query order; a missing file or a malformed row names the file (and
    line) and what is there instead."""
    folder = Path(out) / PREDICTIONS_DIR
    path = folder / f"{method}.jsonl"
    if not path.is_file():
        written = sorted(p.stem for p in folder.glob("*.jsonl"))
        raise FileNotFoundError(f"{path}: no predictions of {method!r} (methods written there: "
                                f"{written})")
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from err
            missing = [k for k in PREDICTION_FIELDS if not isinstance(row, dict) or k not in row]
            if missing:
                raise ValueError(f"{path}:{line_no}: a prediction row lacks {missing}")
            rows.append(row)
    return rows
