"""The cross-task rung over every held-out cluster: one row per cluster from saved `uprise eval`
reports (their report.json, e.g. bench/results/loco_*.json), with the rung's two tests.

    python bench/loco_table.py --reports bench/results/loco_generation.json \
        bench/results/loco_sentiment.json bench/results/loco_full_sentiment_paraphrase.json \
        --out bench/results/loco_table.json

A cluster found in several reports takes its row from the last one given (list the full-split
run after the screening run). Per cluster: n, zero-shot, the best baseline (the report's own
choice: highest cluster average of zero-shot, random, BM25, untrained), trained, trained minus
the best baseline and minus zero-shot (the report's paired bootstrap 95% CIs), and the ranking
section's trained-minus-untrained NDCG@3 (from an earlier report of the cluster when the
winning run skipped that section; from the last of --ranking-reports that ranks the cluster,
e.g. a later `--methods zero_shot --ranking-per-task N` run on the same cached stages, over
either). The verdict columns say whether
each interval clears 0 (the rung: above the best baseline, and not below zero-shot). Prints a
markdown table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import write_json  # noqa: E402
from uprise.evaluation.stats import format_diff  # noqa: E402

METHOD = "trained"


def cluster_row(cluster: str, report: dict[str, Any], source: str,
                k: int | None) -> dict[str, Any]:
    """The rung's numbers for one held-out cluster of one report (`source`, run with `k`)."""
    try:
        methods, best = report["methods"], report["best_baseline"]
        trained = methods[METHOD]
        row = {"cluster": cluster, "source": source, "ranking_source": source,
               "n": sum(int(t["n"]) for t in report["tasks"].values()),
               "k": k, "zero_shot": methods["zero_shot"]["average"],
               "best_baseline": best, "best_value": methods[best]["average"],
               "trained": trained["average"], "vs_best": trained["vs_best_baseline"],
               "vs_zero_shot": trained["vs_zero_shot"]}
    except KeyError as err:
        raise SystemExit(f"{source}: cluster {cluster!r} lacks {err} (is it a report.json that "
                         f"`uprise eval` wrote, with {METHOD!r} and zero_shot evaluated?)") from err
    ranking = report.get("ranking", {}).get("methods", {}).get(METHOD, {})
    row["ranking_vs_untrained"] = ranking.get("ndcg@3", {}).get("vs_untrained")
    row["above_best"] = row["vs_best"]["low"] > 0
    row["below_zero_shot"] = row["vs_zero_shot"]["high"] < 0
    return row


def collect(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """cluster -> row, the last report naming a cluster winning."""
    rows: dict[str, dict[str, Any]] = {}
    for path in paths:
        report = _read(path)
        k = report.get("config", {}).get("k")
        for cluster, result in report["clusters"].items():
            row = cluster_row(cluster, result, str(path), k)
            earlier = rows.get(cluster)
            if row["ranking_vs_untrained"] is None and earlier:  # e.g. --ranking-per-task 0
                row["ranking_vs_untrained"] = earlier["ranking_vs_untrained"]
                row["ranking_source"] = earlier["ranking_source"]
            rows[cluster] = row
    return rows


def override_rankings(rows: dict[str, dict[str, Any]], paths: list[Path]) -> None:
    """Each cluster's ranking from the last of `paths` (report.json files) whose ranking
    section ranks the trained retriever; such a report need not have evaluated it."""
    for path in paths:
        report = _read(path)
        for cluster, result in report["clusters"].items():
            ranking = result.get("ranking", {}).get("methods", {}).get(METHOD, {})
            if "ndcg@3" not in ranking:
                raise SystemExit(f"{path}: cluster {cluster!r} has no ranking of {METHOD!r}; "
                                 "give a report run with --ranking-per-task > 0")
            if cluster not in rows:
                raise SystemExit(f"{path}: cluster {cluster!r} is in none of --reports")
            rows[cluster]["ranking_vs_untrained"] = ranking["ndcg@3"]["vs_untrained"]
            rows[cluster]["ranking_source"] = str(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: not a readable report.json ({err})") from err
    if "clusters" not in report:
        raise SystemExit(f"{path}: no 'clusters' key; give the report.json of a "
                         "leave-one-cluster-out `uprise eval` run")
    return report


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    head = ("| held-out cluster | n | k | zero_shot | best baseline | trained | trained vs best "
            "baseline | trained vs zero-shot | ranking NDCG@3 vs untrained |\n"
            + "|---" * 9 + "|")
    lines = [head]
    for r in rows.values():
        rank = r["ranking_vs_untrained"]
        lines.append(
            f"| {r['cluster']} | {r['n']} | {r['k']} | {100 * r['zero_shot']:.1f} | "
            f"{r['best_baseline']} {100 * r['best_value']:.1f} | {100 * r['trained']:.1f} | "
            f"{format_diff(r['vs_best'])}{' **above**' * r['above_best']} | "
            f"{format_diff(r['vs_zero_shot'])}{' **below**' * r['below_zero_shot']} | "
            f"{format_diff(rank, 1, 3) if rank else 'not run'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reports", nargs="+", required=True, type=Path,
                   help="report.json files of leave-one-cluster-out runs, later ones win")
    p.add_argument("--ranking-reports", nargs="+", default=[], type=Path,
                   help="report.json files whose ranking sections replace the clusters' "
                        "(later ones win)")
    p.add_argument("--out", type=Path, help="JSON output (default: print only)")
    args = p.parse_args()
    rows = collect(args.reports)
    override_rankings(rows, args.ranking_reports)
    print(markdown(rows))
    above = [c for c, r in rows.items() if r["above_best"]]
    below = [c for c, r in rows.items() if r["below_zero_shot"]]
    print(f"\nabove the best baseline (CI > 0): {above or 'none'}; "
          f"below zero-shot (CI < 0): {below or 'none'}")
    if args.out:
        write_json(args.out, {"command": " ".join(sys.argv), "rows": rows,
                              "above_best_baseline": above, "below_zero_shot": below})


if __name__ == "__main__":
    main()
