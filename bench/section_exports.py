"""Benchmark: is a ranking-section result the retriever's or the section's? Any retriever export
judged on any finished cluster folder's ranking section.

    .venv/bin/python bench/section_exports.py --cluster-dir RUN43/cache/struct_to_text \
        --eval-seed 42 --seed 43 \
        --exports r2_seed42=RUN/cache/struct_to_text/round2/retriever \
        --out bench/results/section_exports_struct_to_text_seed43.json

A section (`ranking_ceiling.section`) is one draw of held-out queries and of the shared pool
prompts they are all scored with, and its bootstrap CIs resample the queries, never the prompts:
two folders' sections differ in both, and their retrievers in their training data. Judging the
retrievers of one folder on the section of another separates the two; `--crossed NAME ...` adds,
for those rankers, intervals that resample the prompts too (`add_crossed`, under
`vs_<reference>_crossed`; about 3 ms per ranker and resample of a 300 x 20 section). Ranks the
folder's own rankers (`standard_rankers`, and its mined rounds) plus every `--exports NAME=DIR`
and judges each against `--reference` (default: the folder's untrained encoder; `judge_rankers`:
NDCG@3, top-1 agreement, Spearman per query, paired bootstrap 95% CIs stratified by task); the
folder's own rows reproduce its section's. An export must have been trained with the section's
cluster held out (its metadata says so) or not trained at all; any other is refused before
anything is encoded. Prints a table, writes JSON. Runs the towers and BM25 on CPU (seconds).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import write_json  # noqa: E402
from retriever.export import CONFIG_NAME  # noqa: E402
from uprise.evaluation.ranking import (  # noqa: E402
    add_crossed,
    dense_ranker,
    judge_rankers,
)

sys.path.insert(0, str(REPO / "bench"))
from labels import parse_exports  # noqa: E402
from ranking_ceiling import add_section_arguments, diff_cells, mean_rows, section  # noqa: E402  (bench/, put on sys.path above)
from round_ranking import folder_rankers, mined_rounds  # noqa: E402

METRICS = ("ndcg@3", "top1", "spearman")


def named_exports(specs: list[str], held_out: str) -> dict[str, Path]:
    """{NAME: DIR} of `--exports NAME=DIR ...` (`labels.parse_exports`), each an export that
    never trained on `held_out`."""
    exports = parse_exports(specs)
    for name, folder in exports.items():
        meta = json.loads((folder / CONFIG_NAME).read_text()).get("metadata", {})
        if meta.get("trained") and (meta.get("held_out_cluster") != held_out
                                    or held_out in meta.get("train_clusters", [])):
            raise SystemExit(
                f"--exports {name}: {folder} was trained with held-out cluster "
                f"{meta.get('held_out_cluster')!r} (training clusters "
                f"{meta.get('train_clusters')}), not with {held_out!r} held out: judging it on "
                f"{held_out}'s section would measure what it saw in training")
    return exports


def measure(cluster_dir: Path, specs: list[str], tag: str | None = None, seed: int = 42,
            eval_seed: int | None = None, crossed: tuple[str, ...] | list[str] = (),
            crossed_resamples: int = 1000, reference: str = "untrained") -> dict:
    got = section(cluster_dir, tag, eval_seed)
    exports = named_exports(specs, got.held_out)
    rankers = folder_rankers(cluster_dir, mined_rounds(cluster_dir, required=False), seed)
    clash = sorted(set(exports) & set(rankers))
    if clash:
        raise SystemExit(f"--exports: {clash} already name the folder's own rankers "
                         f"{sorted(rankers)}; choose other names")
    rankers.update({name: dense_ranker(path) for name, path in exports.items()})
    if reference not in rankers:
        raise SystemExit(f"--reference {reference!r} is not one of the rankers: {sorted(rankers)}")
    unknown = sorted(set(crossed) - set(rankers) | set(crossed) & {reference})
    if unknown:
        raise SystemExit(f"--crossed: {unknown} is not one of the rankers judged against "
                         f"{reference!r}: {sorted(set(rankers) - {reference})}")
    relevance = got.relevance(rankers)
    tasks = [q.task for q in got.queries]
    methods = judge_rankers(relevance, got.scores, tasks, reference, seed)
    if crossed:
        add_crossed(methods, relevance, reference, list(crossed), got.scores, tasks,
                    crossed_resamples, seed)
    return {"cluster_dir": str(cluster_dir), "ranking_folder": got.folder.name,
            "held_out_cluster": got.held_out, "n_queries": len(got.queries),
            "n_prompts": len(got.prompts), "lm": got.records[0].lm,
            "exports": {name: str(path) for name, path in exports.items()},
            "crossed_resamples": crossed_resamples if crossed else 0, "reference": reference,
            "methods": methods}


def table(result: dict) -> str:
    """One row per ranker (each metric's mean), then each one's difference to the reference."""
    methods, reference = result["methods"], result.get("reference", "untrained")
    lines = [f"{result['held_out_cluster']} ({result['lm']}): {result['n_queries']} queries x "
             f"{result['n_prompts']} prompts", *mean_rows(methods, METRICS)]
    for name, row in methods.items():
        if name != reference:
            for key, label in ((f"vs_{reference}", ""), (f"vs_{reference}_crossed", " (crossed)")):
                if key in row[METRICS[0]]:
                    lines.append(f"{name:10} - {reference}{label}  "
                                 + diff_cells(row, key, METRICS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_section_arguments(parser)
    parser.add_argument("--exports", nargs="+", default=[], metavar="NAME=DIR",
                        help="retriever exports to judge beside the folder's own rankers")
    parser.add_argument("--crossed", nargs="+", default=[], metavar="NAME",
                        help="rankers that also get intervals resampling the prompts")
    parser.add_argument("--crossed-resamples", type=int, default=1000)
    parser.add_argument("--reference", default="untrained",
                        help="the ranker every other one is judged against")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = measure(args.cluster_dir, args.exports, args.tag, args.seed, args.eval_seed,
                     args.crossed, args.crossed_resamples, args.reference)
    print(table(result))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
