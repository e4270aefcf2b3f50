"""Where each retrieval method's prompts come from on a held-out cluster, and how the evaluated
LM did with them: a diagnostic of what a trained retriever changed, no LM call.

    python bench/prompt_sources.py --cluster-dir RUN/cache/struct_to_text --k 3 \
        --eval-per-task 1000 --report RUN/report/struct_to_text \
        --out bench/results/prompt_sources_struct_to_text.json

--cluster-dir is one held-out cluster's folder of an `uprise eval --clusters` work-dir (its
data/, retriever/, untrained_retriever/ and run config); the held-out rows are drawn as that
evaluation drew them (--eval-per-task, --eval-seed: default the stage seed), and each method
retrieves its --k prompts again (seeded, so the same prompts the evaluation used). Per method:
the share of prompts from each training cluster and of the generation kind (free-text answers;
the rest have answer options), the share of queries whose best prompt (nearest the input) is of
the query's own kind, and, with --report (that cluster's report folder, its predictions/ from
the same --k), the mean metric over the queries whose best prompt is of the query's kind and
over the rest, and the mean words of each method's generated answers per task (zero-shot's
too). Shares and means carry task-stratified bootstrap 95% CIs (the report's
statistic); `vs_untrained` is the paired difference of each per-query share from the untrained
encoder's. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import (  # noqa: E402
    evaluation_queries,
    get_task,
    read_stage_data,
    resolve_data_dir,
    write_json,
)
from uprise.evaluation import build_methods  # noqa: E402
from uprise.evaluation.run import read_predictions  # noqa: E402
from uprise.evaluation.stats import paired_bootstrap  # noqa: E402
from uprise.quickstart import RUN_CONFIG  # noqa: E402

METHODS = ("random", "bm25", "untrained", "trained")


def _mean_ci(values: list[float], tasks: list[str], seed: int) -> dict[str, float] | None:
    if not values:
        return None
    return {**paired_bootstrap(values, [0.0] * len(values), seed=seed, groups=tasks),
            "n": len(values)}


def method_sources(queries: list[Any], demos: list[list[str]], kind_of: dict[str, tuple],
                   values: dict[str, float] | None, seed: int) -> dict[str, Any]:
    """One method's prompt sources (and metric by best-prompt kind) over `queries`."""
    clusters: Counter[str] = Counter()
    generation, same_kind, tasks = [], [], [q.task for q in queries]
    for query, prompts in zip(queries, demos, strict=True):
        sources = [kind_of[text] for text in prompts]  # (cluster, kind) per prompt
        clusters.update(cluster for cluster, _ in sources)
        generation.append(sum(kind == "generation" for _, kind in sources) / len(sources))
        same_kind.append(float(sources[-1][1] == get_task(query.task).kind))
    total = sum(clusters.values())
    row: dict[str, Any] = {
        "clusters": {c: round(n / total, 4) for c, n in clusters.most_common()},
        "generation_share": _mean_ci(generation, tasks, seed),
        "best_prompt_same_kind": _mean_ci(same_kind, tasks, seed),
        "per_query": {"generation_share": generation, "best_prompt_same_kind": same_kind}}
    if values is not None:
        for label, wanted in (("metric_best_same_kind", 1.0), ("metric_best_other_kind", 0.0)):
            picked = [i for i, s in enumerate(same_kind) if s == wanted]
            row[label] = _mean_ci([values[queries[i].id] for i in picked],
                                  [tasks[i] for i in picked], seed)
    return row


def _value(ci: dict[str, float]) -> str:
    """A mean and its interval in % without a sign: '14.6 [13.9, 15.3]'."""
    return f"{100 * ci['diff']:.1f} [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]"


def answer_words(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean words per generated answer, by task (choice rows, whose option is set, left out)."""
    by_task: dict[str, list[int]] = {}
    for row in rows:
        if row["option"] is None:
            by_task.setdefault(row["task"], []).append(len(str(row["prediction"]).split()))
    return {task: round(sum(n) / len(n), 1) for task, n in sorted(by_task.items())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster-dir", required=True, type=Path)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--eval-per-task", type=int, default=200)
    p.add_argument("--eval-seed", type=int)
    p.add_argument("--report", type=Path, help="the cluster's report folder (predictions/)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    cfg = json.loads((args.cluster_dir / RUN_CONFIG).read_text())["config"]
    seed = cfg["seed"]
    eval_seed = seed if args.eval_seed is None else args.eval_seed
    stage = read_stage_data(args.cluster_dir / "data")
    queries = evaluation_queries(cfg["held_out_cluster"], resolve_data_dir(cfg["data_dir"]),
                                 eval_seed, args.eval_per_task)
    kind_of = {}
    for prompt in stage.pool:  # a text shared by two prompts keeps the first one's source
        kind_of.setdefault(prompt.text, (prompt.cluster, get_task(prompt.task).kind))
    folder = args.cluster_dir
    methods = build_methods(list(args.methods), stage.pool, args.k, seed,
                            folder / "retriever", folder / "untrained_retriever")
    answers = {name: read_predictions(args.report, name)
               for name in ("zero_shot", *methods)} if args.report else None
    rows = {}
    for name, method in methods.items():
        values = None
        if answers:
            values = {r["query_id"]: r["value"] for r in answers[name]}
            missing = [q.id for q in queries if q.id not in values]
            if missing:
                raise ValueError(f"{args.report}: {name} has no prediction of {len(missing)} "
                                 f"drawn rows (first {missing[0]}); give the --eval-per-task "
                                 "and --eval-seed that evaluation used")
        rows[name] = method_sources(queries, method(queries), kind_of, values, seed)
    tasks = [q.task for q in queries]
    words = {name: answer_words(found) for name, found in answers.items()} if answers else None
    if "untrained" in rows:
        for row in rows.values():
            row["vs_untrained"] = {
                key: paired_bootstrap(row["per_query"][key], rows["untrained"]["per_query"][key],
                                      seed=seed, groups=tasks)
                for key in ("generation_share", "best_prompt_same_kind")}
    print(f"held-out {cfg['held_out_cluster']}, k = {args.k}, n = {len(queries)} queries "
          "(shares and metrics x 100, 95% CIs)")
    print("| method | generation-kind prompts | best prompt of the query's kind | metric: best "
          "prompt same kind | metric: other kind |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        cells = [_value(row[key]) + f" (n = {row[key]['n']})" if row.get(key) else "-"
                 for key in ("generation_share", "best_prompt_same_kind",
                             "metric_best_same_kind", "metric_best_other_kind")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    result = {"cluster": cfg["held_out_cluster"], "k": args.k, "n": len(queries),
              "eval_seed": eval_seed, "eval_per_task": args.eval_per_task,
              "methods": {n: {k: v for k, v in r.items() if k != "per_query"}
                          for n, r in rows.items()}}
    if words:
        result["answer_words"] = words
        print("mean words per generated answer:", json.dumps(words))
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
