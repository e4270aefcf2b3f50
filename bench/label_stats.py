"""Benchmark: what a set of training labels separates, for scored data folders.

    .venv/bin/python bench/label_stats.py --run RUN/e2e_nlg --variants "" _bm25c

Per variant (the folder suffix of `bench/intask.py`: `data{suffix}` and `scores{suffix}` under
--run) and over every scored training query, with the positive and hard negatives as training
builds them (`retriever.labels.build_training_examples`, the `configs/train.yaml` defaults):
the share of the query's candidates written in its own instruction template, the same share for
its positive and for its hard negatives, the share of positives whose input equals the query's
(the same example under another reference), and how far the positive's LM value lies above its
candidates' median. Explains what contrastive training on those labels can learn (in-task E2E
NLG, DART and CommonGen: README). Pure Python, no model. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import fmean, median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import read_stage_data, write_json  # noqa: E402
from flan_data.score_folder import read_scores  # noqa: E402
from retriever.labels import build_training_examples  # noqa: E402


def variant_stats(run: Path, suffix: str, n_hard_negatives: int) -> dict:
    stage = read_stage_data(run / f"data{suffix}")
    pool = {p.id: p for p in stage.pool}
    queries = {q.id: q for q in stage.train_queries}
    examples = build_training_examples(read_scores(run / f"scores{suffix}"), n_hard_negatives,
                                       queries, pool)

    def same(pid: str, qid: str) -> bool:
        return pool[pid].template == queries[qid].template

    return {
        "n_queries": len(examples),
        "candidates_same_template": fmean(fmean(same(c, e.query_id) for c in e.candidate_ids)
                                          for e in examples),
        "positive_same_template": fmean(same(e.positive_id, e.query_id) for e in examples),
        "negatives_same_template": fmean(fmean(same(n, e.query_id) for n in e.negative_ids)
                                         for e in examples if e.negative_ids),
        "positive_same_input": fmean(pool[e.positive_id].text.startswith(
            queries[e.query_id].input.strip()) for e in examples),
        "positive_over_median_value": fmean(e.value_of(e.positive_id) - median(
            e.candidate_values) for e in examples),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a task folder of bench/intask.py")
    ap.add_argument("--variants", nargs="+", default=[""],
                    help="folder suffixes: '' (round 1), _r2, _bm25c, ...")
    ap.add_argument("--n-hard-negatives", type=int, default=3, help="as configs/train.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "label_stats.json")
    args = ap.parse_args()
    rows = {v or "round1": variant_stats(args.run, v, args.n_hard_negatives)
            for v in args.variants}
    keys = list(next(iter(rows.values())))[1:]
    print(f"{args.run.name}: " + ", ".join(keys))
    for name, r in rows.items():
        print(f"{name:8s} n={r['n_queries']:4d} " + " ".join(f"{r[k]:6.3f}" for k in keys))
    result = {"setup": {k: str(v) for k, v in vars(args).items()}, "variants": rows}
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
