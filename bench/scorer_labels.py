"""Benchmark: what two scoring LMs' labels say about the same training candidates.

    .venv/bin/python bench/scorer_labels.py --data RUN/cache/struct_to_text/data \
        --scores smollm=RUN/cache/struct_to_text/scores qwen=RUN_Q/cache/struct_to_text/scores \
        --out bench/results/scorer_labels_struct_to_text.json

Both score folders must judge the same (query, prompt) pairs of the data folder's training
queries (two `uprise score` / `uprise eval` runs that differ only in the scoring LM). Per
training task and scorer, with the labels training builds (`retriever.labels`, the
`configs/loco_cpu.yaml` defaults): on choice tasks, the share of candidates that made the scorer
correct against chance (`task_accuracy`'s one-sided test, queries as the unit) and the share of
positives that carry the query's own gold answer (the label-copy effect); on every task, per
query, the Spearman correlation between the two scorers' label values over the candidates and
whether they pick the same positive, as task means with a query bootstrap 95% CI. No model.
Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path
from statistics import fmean

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import read_stage_data, write_json  # noqa: E402
from flan_data.schema import Prompt, Query, Score  # noqa: E402
from flan_data.score_folder import read_scores  # noqa: E402
from retriever import ranking  # noqa: E402
from retriever.labels import (  # noqa: E402
    build_training_examples,
    candidate_answer,
    task_accuracy,
    value,
)
from uprise.evaluation.stats import paired_bootstrap  # noqa: E402

N_HARD_NEGATIVES = 3  # configs/loco_cpu.yaml


def spearman(a: list[float], b: list[float]) -> float:
    """`retriever.ranking.spearman` of one query's two score lists; 0 when either is constant."""
    rho = float(ranking.spearman(torch.tensor([a], dtype=torch.float64),
                                 torch.tensor([b], dtype=torch.float64))[0])
    return 0.0 if math.isnan(rho) else rho


def mean_ci(values: list[float], seed: int) -> dict:
    """The mean over queries with `paired_bootstrap`'s 95% interval (against 0)."""
    ci = paired_bootstrap(values, [0.0] * len(values), seed=seed)
    return {"mean": ci["diff"], "low": ci["low"], "high": ci["high"], "n": len(values)}


def compare(data: Path, folders: dict[str, Path], seed: int = 42) -> dict:
    """Reads the data folder's training queries and pool and both score folders."""
    if len(folders) != 2:
        raise SystemExit(f"--scores takes two NAME=FOLDER, got {len(folders)}")
    stage = read_stage_data(data)
    queries = {q.id: q for q in stage.train_queries}
    scores = {name: [s for s in read_scores(folder) if s.query_id in queries]
              for name, folder in folders.items()}
    report = compare_scores(queries, {p.id: p for p in stage.pool}, scores, seed)
    return {"data": str(data), "scores": {k: str(v) for k, v in folders.items()}, **report}


def compare_scores(queries: dict[str, Query], pool: dict[str, Prompt],
                   scores: dict[str, list[Score]], seed: int) -> dict:
    """The comparison of two scorers' `scores` of the same pairs (see the module docstring)."""
    values = {name: {(s.query_id, s.prompt_id): value(s) for s in rows}
              for name, rows in scores.items()}
    (a, va), (b, vb) = values.items()
    if va.keys() != vb.keys():
        raise SystemExit(f"{a} and {b} judge different pairs ({len(va.keys() ^ vb.keys())} "
                         "differ); score the same data folder")
    positives = {name: {e.query_id: e.positive_id for e in build_training_examples(
        rows, N_HARD_NEGATIVES, queries, pool)} for name, rows in scores.items()}
    by_query: dict[str, list[str]] = defaultdict(list)
    for qid, pid in sorted(va):
        by_query[qid].append(pid)
    tasks: dict[str, dict] = defaultdict(lambda: {"rho": [], "same_positive": []})
    for qid, pids in by_query.items():
        row = tasks[queries[qid].task]
        row["rho"].append(spearman([va[qid, p] for p in pids], [vb[qid, p] for p in pids]))
        if qid in positives[a] and qid in positives[b]:
            row["same_positive"].append(float(positives[a][qid] == positives[b][qid]))
    accuracy = {name: task_accuracy(rows, queries) for name, rows in scores.items()}
    out = {}
    for task, row in sorted(tasks.items()):
        entry: dict = {"n_queries": len(row["rho"]),
                       "spearman": mean_ci(row["rho"], seed),
                       "same_positive": fmean(row["same_positive"]) if row["same_positive"]
                       else None}
        for name in scores:
            acc = accuracy[name].get(task)
            copied = [candidate_answer(pool[pid], queries[qid]) == queries[qid].target
                      for qid, pid in positives[name].items()
                      if queries[qid].task == task and queries[qid].options]
            entry[name] = {
                "accuracy": None if acc is None else round(acc.accuracy, 3),
                "chance": None if acc is None else round(acc.chance, 3),
                "z": None if acc is None else round(acc.z, 2),
                "above_chance": None if acc is None else acc.above_chance,
                "positive_carries_gold": fmean(copied) if copied else None,
                "labelled_queries": sum(queries[q].task == task for q in positives[name]),
            }
        out[task] = entry
    return {"n_hard_negatives": N_HARD_NEGATIVES, "seed": seed, "tasks": out,
            "above_chance": {name: sorted(t for t, acc in accuracy[name].items()
                                          if acc.above_chance) for name in scores},
            "choice_tasks": sorted(accuracy[a])}


def _print(report: dict) -> None:
    a, b = report["scores"]
    print(f"| task | n | {a} acc | {b} acc | chance | {a} copy | {b} copy | "
          f"Spearman {a}~{b} [95% CI] | same positive |")
    print("|---|---|---|---|---|---|---|---|---|")

    def pct(x: float | None, star: bool | None = None) -> str:
        return "-" if x is None else f"{100 * x:.0f}%{'*' if star else ''}"

    for task, e in report["tasks"].items():
        rho = e["spearman"]
        print(f"| {task} | {e['n_queries']} | {pct(e[a]['accuracy'], e[a]['above_chance'])} | "
              f"{pct(e[b]['accuracy'], e[b]['above_chance'])} | {pct(e[a]['chance'])} | "
              f"{pct(e[a]['positive_carries_gold'])} | {pct(e[b]['positive_carries_gold'])} | "
              f"{rho['mean']:+.2f} [{rho['low']:+.2f}, {rho['high']:+.2f}] | "
              f"{pct(e['same_positive'])} |")
    print("(* above chance, one-sided 95%; copy: positives carrying the query's gold answer)")
    for name, tasks in report["above_chance"].items():
        print(f"{name}: above chance on {len(tasks)} of {len(report['choice_tasks'])} choice "
              f"tasks: {', '.join(tasks) or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the data-stage folder scored")
    ap.add_argument("--scores", nargs=2, required=True, metavar="NAME=FOLDER")
    ap.add_argument("--seed", type=int, default=42, help="bootstrap seed")
    ap.add_argument("--out", type=Path, help="JSON output (default: print only)")
    args = ap.parse_args()
    folders = {}
    for spec in args.scores:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"--scores {spec!r}: expected NAME=FOLDER, e.g. qwen=RUN/scores")
        folders[name] = Path(folder)
    report = compare(args.data, folders, args.seed)
    report["command"] = " ".join(["python", *sys.argv])
    _print(report)
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
