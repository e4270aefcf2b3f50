"""Benchmark: what each retrieval method hands the LM, for one evaluated data folder.

    .venv/bin/python bench/demo_choice.py --data RUN/e2e_nlg/data \
        --retriever RUN/e2e_nlg/retriever \
        --baseline-retriever RUN/e2e_nlg/eval_k3/untrained_retriever
    .venv/bin/python bench/demo_choice.py --data WORK/struct_to_text/data --eval-per-task 150 \
        --retriever WORK/struct_to_text/retriever \
        --baseline-retriever WORK/struct_to_text/untrained_retriever   # a held-out cluster

Per method (random, BM25, untrained, trained, and with --hybrid-weight the hybrid; k prompts per
evaluated query, as `uprise eval` builds them) and over every evaluated query: the share of its
prompts written in the query's own task and instruction template, the content-word overlap
(Jaccard of lower-cased word sets, the words of the task's templates left out) between the
query's input and its best prompt (the one nearest the input), the share of prompts from
generation tasks and the share from each pool cluster (what a cross-task pool hands a held-out
cluster). Explains downstream differences that the LM-score ranking does not (in-task E2E NLG,
cross-task struct-to-text: README). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from statistics import fmean

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import (  # noqa: E402
    evaluation_queries,
    get_task,
    read_stage_data,
    resolve_data_dir,
    write_json,
)
from proxy_lm.loading import cpu_name  # noqa: E402
from uprise.evaluation.methods import build_methods  # noqa: E402

WORD = re.compile(r"\w+")


def words(text: str, stop: frozenset[str] = frozenset()) -> set[str]:
    return set(WORD.findall(text.lower())) - stop


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="`uprise data` folder")
    ap.add_argument("--retriever", required=True, help="trained export")
    ap.add_argument("--baseline-retriever", required=True, help="untrained export")
    ap.add_argument("--eval-per-task", type=int,
                    help="leave-one-cluster-out data folder (`uprise eval --clusters --work-dir`): "
                         "its held-out cluster's evaluation queries, this many per task, as "
                         "`uprise eval` samples them")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--hybrid-weight", type=float,
                    help="also the hybrid method at this weight (the one `uprise eval` chose)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "demo_choice_e2e.json")
    args = ap.parse_args()
    if args.eval_per_task is not None and args.eval_per_task < 1:
        ap.error(f"--eval-per-task {args.eval_per_task}: expected >= 1")
    stage = read_stage_data(args.data)
    by_text = {p.text: p for p in stage.pool}
    queries = stage.eval_queries
    if args.eval_per_task is not None:
        cluster = stage.manifest.get("held_out_cluster")
        if not cluster:
            sys.exit(f"{args.data}: its data_manifest.json names no held_out_cluster; drop "
                     "--eval-per-task (an in-task folder holds its evaluation queries)")
        source = resolve_data_dir(stage.manifest.get("data_source"))  # the run's own source
        seed = stage.manifest.get("seed", args.seed)  # and its own seed, as `uprise eval` samples
        queries = evaluation_queries(cluster, source, seed, args.eval_per_task)
    if not queries:
        sys.exit(f"{args.data}: no evaluation queries; for a leave-one-cluster-out folder pass "
                 "--eval-per-task N (the N of its `uprise eval` run)")
    names = ["random", "bm25", "untrained", "trained"]
    names += ["hybrid"] if args.hybrid_weight is not None else []
    methods = build_methods(names, stage.pool, args.k, args.seed, trained_dir=args.retriever,
                            untrained_dir=args.baseline_retriever,
                            hybrid_weight=args.hybrid_weight)
    clusters = sorted({p.cluster for p in stage.pool})
    stop = {t: frozenset(w for tmpl in get_task(t).templates for w in words(tmpl))
            for t in {q.task for q in queries}}
    rows = {}
    for name, method in methods.items():
        demos = method(queries)
        shown = [[by_text[d] for d in ds] for ds in demos]
        rows[name] = {
            "same_template": fmean(fmean(p.task == q.task and p.template == q.template for p in ps)
                                   for q, ps in zip(queries, shown, strict=True)),
            "same_task": fmean(fmean(p.task == q.task for p in ps)
                               for q, ps in zip(queries, shown, strict=True)),
            "generation_prompts": fmean(fmean(get_task(p.task).kind == "generation" for p in ps)
                                        for ps in shown),
            "clusters": {c: fmean(fmean(p.cluster == c for p in ps) for ps in shown)
                         for c in clusters},
            "best_prompt_word_jaccard": fmean(
                jaccard(words(q.input, stop[q.task]), words(ds[-1], stop[q.task]))
                for q, ds in zip(queries, demos, strict=True)),
        }
    report = {"setup": {k: str(v) for k, v in vars(args).items()}, "cpu": cpu_name(),
              "n_queries": len(queries),
              "n_templates": len({(p.task, p.template) for p in stage.pool}),
              "methods": rows}
    print(f"{len(queries)} evaluated queries, k = {args.k}")
    print(f"{'method':10s} {'same task':>10s} {'same template':>14s} {'word Jaccard (best)':>20s}"
          f" {'generation':>11s}  top pool clusters")
    for name, r in rows.items():
        top = sorted(r["clusters"].items(), key=lambda kv: -kv[1])[:3]
        print(f"{name:10s} {r['same_task']:10.2f} {r['same_template']:14.2f} "
              f"{r['best_prompt_word_jaccard']:20.3f} {r['generation_prompts']:11.2f}  "
              + ", ".join(f"{c} {v:.2f}" for c, v in top))
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
