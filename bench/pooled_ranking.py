"""Benchmark: over several held-out cluster folders at once, does one ranker rank the LM's
preferences better than another? The ranking sections of several folders judged together.

    .venv/bin/python bench/pooled_ranking.py \
        --section RUN/cache/closed_book_qa TAG 101 101 \
        --section RUN/cache/summarization TAG 104 104 \
        --pairs trained:untrained trained:bm25 --out bench/results/pooled_ranking.json

Each `--section CLUSTER_DIR TAG EVAL_SEED RANKING_SEED` is one finished `uprise eval --clusters`
ranking section (`ranking_ceiling.section`; the two seeds are the run's `--eval-seed` and
`--ranking-seed`, its `--seed` where it had none). Per section and pair NAME:REFERENCE, the
difference of the two rankers' task-stratified mean NDCG@3, top-1 agreement and Spearman
(`crossed_resamples`), with two 95% intervals: `crossed` resamples the section's prompts and its
queries within task, `queries` its queries only (the section's own `vs_<reference>` CIs, drawn
anew). Pooled: the equal-weight mean over the sections, its interval the percentiles of the
sections' independent draws averaged resample by resample (`interval`; section i draws with
bootstrap seed `--seed` + i). The interval counts query and prompt sampling, not training seeds.
One folder's crossed interval is too wide to resolve a difference of 0.02-0.05 NDCG@3 at 100
prompts; the mean of k independent sections narrows it by about the square root of k.

The rankers are the folder's own (`standard_rankers` seeded with the folder's seed, its mined
rounds as `trained_r<r>`) and, when a pair names it, the hybrid at the weight `uprise eval`
chose (`chosen_weight`). Also counted per section: the queries and prompts it shares with each
other section of the same folder (fresh sections should share few). Prints a table, writes
JSON. Runs the towers and BM25 on CPU; the crossed bootstrap takes about 20 ms per ranker and
resample of a 150 x 100 section (four such sections, five rankers, 1,000 resamples: 410 s on 2
cores).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import write_json  # noqa: E402
from proxy_lm import read_scores  # noqa: E402
from uprise.evaluation.hybrid import chosen_weight  # noqa: E402
from uprise.evaluation.ranking import (  # noqa: E402
    crossed_resamples,
    hybrid_ranker,
    interval,
)
from uprise.evaluation.stats import format_diff  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from ranking_ceiling import Section, section  # noqa: E402  (bench/, put on sys.path above)
from round_ranking import folder_rankers, mined_rounds  # noqa: E402

METRICS = ("ndcg@3", "top1", "spearman")
MODES = {"crossed": True, "queries": False}  # interval name: resample the prompts too


def parse_pairs(specs: list[str]) -> list[tuple[str, str]]:
    """[(NAME, REFERENCE)] of `--pairs NAME:REFERENCE ...`."""
    pairs = []
    for spec in specs:
        name, sep, reference = spec.partition(":")
        if not sep or not name or not reference or name == reference:
            raise SystemExit(f"--pairs {spec!r}: expected NAME:REFERENCE, two different "
                             "rankers (e.g. trained:untrained)")
        pairs.append((name, reference))
    return pairs


def parse_section(spec: list[str]) -> tuple[Path, str, int, int]:
    """(cluster_dir, tag, eval_seed, ranking_seed) of one `--section` (four values)."""
    cluster_dir, tag, eval_seed, ranking_seed = spec
    try:
        return Path(cluster_dir), tag, int(eval_seed), int(ranking_seed)
    except ValueError:
        raise SystemExit(f"--section {' '.join(spec)}: EVAL_SEED and RANKING_SEED must be "
                         "integers (the run's --eval-seed and --ranking-seed, else its --seed)"
                         ) from None


def shared_with_other_sections(folder: Path, queries: set[str], prompts: set[str]) -> dict:
    """{tag: {"queries", "prompts"}}: how many of the section's query and prompt ids each other
    ranking section of the same folder scored too."""
    out = {}
    for other in sorted(p for p in folder.parent.iterdir() if p.is_dir() and p != folder):
        records = read_scores(other)
        out[other.name] = {"queries": len(queries & {s.query_id for s in records}),
                           "prompts": len(prompts & {s.prompt_id for s in records})}
    return out


def judge_section(spec: tuple[Path, str, int, int], got: Section, pairs: list[tuple[str, str]],
                  n_resamples: int, bootstrap_seed: int) -> tuple[dict, dict]:
    """One section (`spec`, read as `got`): its JSON row, and {mode: {(name, reference):
    {metric: (diff, draws)}}}."""
    cluster_dir, _, eval_seed, ranking_seed = spec
    seed = got.config["seed"]
    rankers = folder_rankers(cluster_dir, mined_rounds(cluster_dir, required=False), seed)
    row: dict = {}
    if any("hybrid" in pair for pair in pairs):
        row["hybrid"] = chosen_weight(cluster_dir / "retriever", None, seed)
        rankers["hybrid"] = hybrid_ranker(cluster_dir / "retriever", row["hybrid"]["weight"])
    used = {n for pair in pairs for n in pair}
    if used - set(rankers):
        raise SystemExit(f"--pairs: {sorted(used - set(rankers))} is not a ranker of "
                         f"{cluster_dir}: {sorted({*rankers, 'hybrid'})}")
    relevance = got.relevance({n: r for n, r in rankers.items() if n in used})
    tasks = [q.task for q in got.queries]
    draws = {mode: crossed_resamples(relevance, pairs, got.scores, tasks, n_resamples,
                                     bootstrap_seed, prompts)
             for mode, prompts in MODES.items()}
    row.update({
        "cluster_dir": str(cluster_dir), "ranking_folder": got.folder.name,
        "held_out_cluster": got.held_out, "eval_seed": eval_seed, "ranking_seed": ranking_seed,
        "bootstrap_seed": bootstrap_seed, "n_queries": len(got.queries),
        "n_prompts": len(got.prompts), "lm": got.records[0].lm,
        "shared_with": shared_with_other_sections(
            got.folder, {q.id for q in got.queries}, {p.id for p in got.prompts}),
        "pairs": {f"{n}-{r}": {mode: {m: interval([got_draws[n, r][m]]) for m in METRICS}
                               for mode, got_draws in draws.items()} for n, r in pairs}})
    return row, draws


def measure(specs: list[tuple[Path, str, int, int]], pairs: list[tuple[str, str]],
            n_resamples: int = 1000, seed: int = 42) -> dict:
    read = [section(*spec) for spec in specs]  # every section checked before any ranking
    rows, draws = [], []
    for i, (spec, got) in enumerate(zip(specs, read, strict=True)):
        row, drawn = judge_section(spec, got, pairs, n_resamples, seed + i)
        rows.append(row)
        draws.append(drawn)
    pooled = {f"{n}-{r}": {mode: {m: interval([d[mode][n, r][m] for d in draws])
                                  for m in METRICS} for mode in MODES} for n, r in pairs}
    return {"n_sections": len(specs), "resamples": n_resamples, "seed": seed,
            "weights": "equal per section", "sections": rows, "pooled": pooled}


def table(result: dict) -> str:
    """Per pair: each section's NDCG@3 difference with its crossed CI, then the pooled one
    (crossed and query-only)."""
    names = [f"{s['held_out_cluster']}/{s['ranking_folder']}" for s in result["sections"]]
    lines = [f"{result['n_sections']} sections, {result['resamples']} resamples; "
             "NDCG@3 differences, 95% CIs (crossed: prompts resampled too)"]
    for pair, pooled in result["pooled"].items():
        lines.append(pair)
        for name, row in zip(names, result["sections"], strict=True):
            ci = row["pairs"][pair]["crossed"]["ndcg@3"]
            lines.append(f"  {name:32} {format_diff(ci, 1, 3)}  "
                         f"(n={row['n_queries']}x{row['n_prompts']})")
        for mode in MODES:
            ci = pooled[mode]["ndcg@3"]
            lines.append(f"  {'pooled, ' + mode:32} {format_diff(ci, 1, 3)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", nargs=4, action="append", required=True,
                        metavar=("CLUSTER_DIR", "TAG", "EVAL_SEED", "RANKING_SEED"),
                        help="one ranking section (repeat for each)")
    parser.add_argument("--pairs", nargs="+", default=["trained:untrained"],
                        metavar="NAME:REFERENCE", help="rankers to compare")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42, help="bootstrap seed of section 1")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = measure([parse_section(s) for s in args.section], parse_pairs(args.pairs),
                     args.resamples, args.seed)
    print(table(result))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
