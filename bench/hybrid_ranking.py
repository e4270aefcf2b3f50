"""Benchmark: does the hybrid (trained retriever + BM25) rank held-out LM preferences better than
each of its parts and the untrained encoder?

    .venv/bin/python bench/hybrid_ranking.py --cluster-dir RUN/cache/struct_to_text \
        --out bench/results/hybrid_ranking_struct_to_text.json

Reads the ranking section of a finished `uprise eval --clusters` cluster folder
(`ranking_ceiling.section`: every sampled held-out query x the shared pool prompts, scored by
the folder's scoring LM), chooses the hybrid's weight as `uprise eval` does
(`uprise.evaluation.hybrid.chosen_weight`: NDCG@3 on the trained retriever's own validation
queries, never held-out data; the curve is recorded) unless `--hybrid-weight` gives one, ranks
with the section's rankers (`standard_rankers`) and judges each against every reference of
`REFERENCES` (`judge_rankers`: NDCG@3, top-1 agreement, Spearman per query, paired bootstrap 95%
CIs stratified by task). Against the untrained encoder it reproduces the section's own rows;
against BM25 and the trained retriever it says whether the mix adds anything to either part.
`--crossed` adds, for the hybrid against each reference, intervals that resample the section's
prompts too (`add_crossed`, under `vs_<reference>_crossed`). Prints a table, writes JSON.
Runs the query/prompt towers and BM25 on CPU (seconds).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import write_json  # noqa: E402
from uprise.evaluation.hybrid import chosen_weight  # noqa: E402
from uprise.evaluation.ranking import (  # noqa: E402
    add_crossed,
    judge_rankers,
    standard_rankers,
)

sys.path.insert(0, str(REPO / "bench"))
from ranking_ceiling import add_section_arguments, diff_cells, mean_rows, section  # noqa: E402  (bench/, put on sys.path above)

REFERENCES = ("untrained", "bm25", "trained")
METRICS = ("ndcg@3", "top1", "spearman")


def measure(cluster_dir: Path, tag: str | None = None, seed: int = 42,
            weight: float | None = None, eval_seed: int | None = None,
            crossed_resamples: int = 0) -> dict:
    """The section judged against every reference; with `crossed_resamples` > 0 the hybrid's
    differences also get intervals that resample the prompts."""
    got = section(cluster_dir, tag, eval_seed)
    hybrid = chosen_weight(cluster_dir / "retriever", weight, seed)
    rankers = standard_rankers(cluster_dir / "retriever", cluster_dir / "untrained_retriever",
                               seed, hybrid["weight"])
    relevance = got.relevance(rankers)
    tasks = [q.task for q in got.queries]
    against = {ref: judge_rankers(relevance, got.scores, tasks, ref, seed) for ref in REFERENCES}
    if crossed_resamples:
        for ref in REFERENCES:
            add_crossed(against[ref], relevance, ref, ["hybrid"], got.scores, tasks,
                        crossed_resamples, seed)
    return {"cluster_dir": str(cluster_dir), "ranking_folder": got.folder.name,
            "held_out_cluster": got.held_out, "n_queries": len(got.queries),
            "n_prompts": len(got.prompts), "lm": got.records[0].lm, "hybrid": hybrid,
            "crossed_resamples": crossed_resamples, "against": against}


def table(result: dict) -> str:
    """One row per ranker: each metric's mean, then the hybrid's differences per reference."""
    base = result["against"]["untrained"]
    lines = [f"{result['held_out_cluster']} ({result['lm']}): {result['n_queries']} queries x "
             f"{result['n_prompts']} prompts; hybrid weight {result['hybrid']['weight']}",
             *mean_rows(base, METRICS)]
    for ref in REFERENCES:
        row = result["against"][ref]["hybrid"]
        lines.append(f"hybrid - {ref:9} " + diff_cells(row, f"vs_{ref}", METRICS))
        if f"vs_{ref}_crossed" in row[METRICS[0]]:
            lines.append(f"  (crossed) {'':9}"
                         + diff_cells(row, f"vs_{ref}_crossed", METRICS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_section_arguments(parser)
    parser.add_argument("--hybrid-weight", type=float,
                        help="the hybrid's weight (default: chosen on the trained retriever's "
                             "validation queries, as `uprise eval` does)")
    parser.add_argument("--crossed", action="store_true",
                        help="also intervals that resample the section's prompts")
    parser.add_argument("--crossed-resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = measure(args.cluster_dir, args.tag, args.seed, args.hybrid_weight, args.eval_seed,
                     args.crossed_resamples if args.crossed else 0)
    print(table(result))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
