"""Benchmark: do mined rounds (LLM-R, UDR) rank held-out LM preferences better than round 1,
the untrained encoder and BM25?

    .venv/bin/python bench/round_ranking.py --cluster-dir RUN/cache/struct_to_text \
        --out bench/results/round_ranking_struct_to_text.json

Reads the ranking section of a finished `uprise eval --clusters ... --mining-rounds R` cluster
folder (`ranking_ceiling.section`: every sampled held-out query x the shared pool prompts, scored
by the folder's scoring LM), ranks it with the section's rankers (`standard_rankers`) plus every
mined round's export found in the folder (`trained_r2`, ..., `uprise.rounds.round_method`) and
judges each against every reference: the untrained encoder, BM25 and each earlier round
(`judge_rankers`: NDCG@3, top-1 agreement, Spearman per query, paired bootstrap 95% CIs
stratified by task). Against the untrained encoder it reproduces the section's own rows. Also
records each round's export selection on its own validation queries (training clusters).
Prints a table, writes JSON. Runs the towers and BM25 on CPU (seconds).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import write_json  # noqa: E402
from retriever.export import CONFIG_NAME  # noqa: E402
from uprise.evaluation.ranking import (  # noqa: E402
    Ranker,
    dense_ranker,
    judge_rankers,
    standard_rankers,
)
from uprise.rounds import round_method  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from ranking_ceiling import add_section_arguments, diff_cells, mean_rows, section  # noqa: E402  (bench/, put on sys.path above)

METRICS = ("ndcg@3", "top1", "spearman")


def mined_rounds(cluster_dir: Path, required: bool = True) -> dict[int, Path]:
    """{r: round r's retriever export} for every `round<r>` folder of `cluster_dir`, in order;
    refuses a round without an exported retriever and, when `required`, a folder without rounds."""
    found = {int(m.group(1)): p for p in cluster_dir.glob("round*")
             if p.is_dir() and (m := re.fullmatch(r"round(\d+)", p.name))}
    if required and not found:
        raise SystemExit(f"{cluster_dir}: no mined round (round2/, ...); run `uprise eval "
                         "--clusters ... --mining-rounds 2` on it first")
    rounds = {r: found[r] / "retriever" for r in sorted(found)}
    for export in rounds.values():
        if not (export / CONFIG_NAME).is_file():
            raise SystemExit(f"{export}: no exported retriever; the round did not finish, "
                             "rerun its `uprise eval --mining-rounds` command")
    return rounds


def folder_rankers(cluster_dir: Path, rounds: dict[int, Path], seed: int) -> dict[str, Ranker]:
    """The rankers of a cluster folder's section: `standard_rankers` (with `trained` when the
    folder has a retriever) and each of `rounds` (`mined_rounds`) as `trained_r<r>`."""
    trained = cluster_dir / "retriever"
    rankers = standard_rankers(trained if trained.is_dir() else None,
                               cluster_dir / "untrained_retriever", seed)
    rankers.update({round_method(r): dense_ranker(path) for r, path in rounds.items()})
    return rankers


def _selection(export_dir: Path) -> dict | None:
    return json.loads((export_dir / CONFIG_NAME).read_text()).get(
        "metadata", {}).get("validation_ranking")


def measure(cluster_dir: Path, tag: str | None = None, seed: int = 42,
            eval_seed: int | None = None) -> dict:
    got = section(cluster_dir, tag, eval_seed)
    rounds = mined_rounds(cluster_dir)
    relevance = got.relevance(folder_rankers(cluster_dir, rounds, seed))
    tasks = [q.task for q in got.queries]
    references = ["untrained", "bm25", "trained", *(round_method(r) for r in list(rounds)[:-1])]
    return {"cluster_dir": str(cluster_dir), "ranking_folder": got.folder.name,
            "held_out_cluster": got.held_out, "n_queries": len(got.queries),
            "n_prompts": len(got.prompts), "lm": got.records[0].lm,
            "selection": {round_method(r): _selection(path)
                          for r, path in {1: cluster_dir / "retriever", **rounds}.items()},
            "against": {ref: judge_rankers(relevance, got.scores, tasks, ref, seed)
                        for ref in references}}


def table(result: dict) -> str:
    """One row per ranker (each metric's mean), then each mined round's differences against
    every reference before it."""
    base = result["against"]["untrained"]
    lines = [f"{result['held_out_cluster']} ({result['lm']}): {result['n_queries']} queries x "
             f"{result['n_prompts']} prompts", *mean_rows(base, METRICS)]
    rounds = [name for name in base if name.startswith("trained_r")]
    for name in rounds:
        for ref in result["against"]:
            if ref == name or (ref in rounds and rounds.index(ref) > rounds.index(name)):
                continue
            lines.append(f"{name} - {ref:10} "
                         + diff_cells(result["against"][ref][name], f"vs_{ref}", METRICS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_section_arguments(parser)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = measure(args.cluster_dir, args.tag, args.seed, args.eval_seed)
    print(table(result))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
