"""Benchmark: does averaging the trained retriever's weights with its start's (WiSE-FT) rank
held-out LM preferences better than the untrained encoder, the trained retriever and BM25?

    .venv/bin/python bench/wise_ranking.py --cluster-dir RUN/cache/struct_to_text \
        --out bench/results/wise_ranking_struct_to_text.json

Reads the ranking section of a finished `uprise eval --clusters` cluster folder
(`ranking_ceiling.section`: every sampled held-out query x the shared pool prompts, scored by
the folder's scoring LM) and ranks it with the section's rankers (`standard_rankers`) plus
`wise`, the trained export interpolated with the folder's untrained export at `--alpha` (fixed
before looking, default 0.5, WiSE-FT's choice when no out-of-distribution validation exists),
and `wise_val`, interpolated at the alpha that the trained retriever's own training-cluster
validation queries prefer (`uprise.evaluation.wise.calibrate_alpha`; its curve is recorded).
Each is judged against every reference of `REFERENCES` (`judge_rankers`: NDCG@3, top-1
agreement, Spearman per query, paired bootstrap 95% CIs stratified by task). The held-out NDCG@3
at every alpha of `ALPHAS` is recorded too, as a curve to read, never to choose alpha by.
Prints a table, writes JSON. Runs the towers on CPU (about a second per alpha and section).
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
    interpolated_ranker,
    judge_rankers,
    standard_rankers,
)
from uprise.evaluation.wise import ALPHAS, calibrate_alpha  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from ranking_ceiling import add_section_arguments, diff_cells, mean_rows, section  # noqa: E402  (bench/, put on sys.path above)

REFERENCES = ("untrained", "trained", "bm25")
METRICS = ("ndcg@3", "top1", "spearman")
CURVE_METRIC = "ndcg@3"


def measure(cluster_dir: Path, tag: str | None = None, seed: int = 42,
            alpha: float = 0.5, eval_seed: int | None = None) -> dict:
    got = section(cluster_dir, tag, eval_seed)
    trained, untrained = cluster_dir / "retriever", cluster_dir / "untrained_retriever"
    validation = calibrate_alpha(trained, untrained, seed=seed)
    texts = [q.input for q in got.queries], [p.text for p in got.prompts]
    by_alpha = {a: interpolated_ranker(trained, untrained, a)(*texts)
                for a in dict.fromkeys([*ALPHAS, alpha, validation["alpha"]])}
    relevance = {name: rank(*texts)
                 for name, rank in standard_rankers(trained, untrained, seed).items()}
    relevance.update(wise=by_alpha[alpha], wise_val=by_alpha[validation["alpha"]])
    tasks = [q.task for q in got.queries]
    curve = {f"alpha_{a}": by_alpha[a] for a in ALPHAS}
    held_out_curve = judge_rankers({"untrained": relevance["untrained"], **curve}, got.scores,
                                   tasks, "untrained", seed)
    meta = json.loads((trained / CONFIG_NAME).read_text()).get("metadata", {})
    return {"cluster_dir": str(cluster_dir), "ranking_folder": got.folder.name,
            "held_out_cluster": got.held_out, "n_queries": len(got.queries),
            "n_prompts": len(got.prompts), "lm": got.records[0].lm, "alpha": alpha,
            "trained_selection": meta.get("validation_ranking"),
            "validation": validation,
            "against": {ref: judge_rankers(relevance, got.scores, tasks, ref, seed)
                        for ref in REFERENCES},
            "held_out_curve": {name.removeprefix("alpha_"): row[CURVE_METRIC]
                               for name, row in held_out_curve.items() if name != "untrained"}}


def table(result: dict) -> str:
    """One row per ranker (each metric's mean), the two interpolations' differences per
    reference, then the held-out curve (to read, not to choose by)."""
    base = result["against"]["untrained"]
    lines = [f"{result['held_out_cluster']} ({result['lm']}): {result['n_queries']} queries x "
             f"{result['n_prompts']} prompts; wise alpha {result['alpha']}, validation alpha "
             f"{result['validation']['alpha']} (n={result['validation']['n_queries']})",
             *mean_rows(base, METRICS)]
    for name in ("wise", "wise_val"):
        for ref in REFERENCES:
            lines.append(f"{name} - {ref:9} "
                         + diff_cells(result["against"][ref][name], f"vs_{ref}", METRICS))
    lines.append("held-out NDCG@3 by alpha (read only): " + " ".join(
        f"{a}:{row['mean']:.3f}" for a, row in result["held_out_curve"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_section_arguments(parser)
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="the interpolation judged as `wise` (1: trained, 0: its start)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = measure(args.cluster_dir, args.tag, args.seed, args.alpha, args.eval_seed)
    print(table(result))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
