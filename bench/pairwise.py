"""Paired differences between the methods of an `uprise eval` report, from its predictions.

`report.json` compares every method with zero-shot and with the best baseline; this adds any
other pair (e.g. trained against untrained: what training added over the starting encoder),
with the same statistic: the mean per-example difference over the queries both methods
answered, a paired bootstrap 95% CI stratified by task, and the report's own seed.

    python bench/pairwise.py --report RUN/report --pairs trained:untrained trained:bm25 \
        --out bench/results/pairwise.json

--report is the folder `uprise eval` wrote: a leave-one-cluster-out report (one sub-folder per
held-out cluster, each with predictions/) or a single-run one (predictions/ in it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import write_json  # noqa: E402
from uprise.evaluation.run import PREDICTIONS_DIR, read_predictions  # noqa: E402
from uprise.evaluation.stats import paired_bootstrap  # noqa: E402


def _by_query(folder: Path, method: str) -> dict[str, tuple[str, float]]:
    """query_id -> (task, metric value) of one method's predictions, in the evaluation's order."""
    try:
        rows = read_predictions(folder, method)
    except (OSError, ValueError) as err:
        raise SystemExit(str(err)) from err
    return {r["query_id"]: (r["task"], float(r["value"])) for r in rows}


def compare(folder: Path, pairs: list[tuple[str, str]], seed: int) -> dict[str, dict]:
    """Every pair (a, b) on the queries of one predictions/ folder: a - b with its CI."""
    out = {}
    for a, b in pairs:
        va, vb = _by_query(folder, a), _by_query(folder, b)
        ids = [i for i in va if i in vb]  # the evaluation's query order, as report.json
        if not ids:
            raise SystemExit(f"{folder}: {a} and {b} share no query")
        ci = paired_bootstrap([va[i][1] for i in ids], [vb[i][1] for i in ids], seed=seed,
                              groups=[va[i][0] for i in ids])
        out[f"{a}-{b}"] = {**ci, "n": len(ids)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report", required=True, type=Path, help="folder `uprise eval` wrote")
    p.add_argument("--pairs", nargs="+", required=True, metavar="A:B",
                   help="method pairs, e.g. trained:untrained")
    p.add_argument("--out", type=Path, help="JSON output (default: print only)")
    args = p.parse_args()
    pairs = []
    for spec in args.pairs:
        a, sep, b = spec.partition(":")
        if not (sep and a and b):
            raise SystemExit(f"--pairs: {spec!r} is not METHOD:METHOD (e.g. trained:untrained)")
        pairs.append((a, b))
    report_path = args.report / "report.json"
    if not report_path.is_file():
        raise SystemExit(f"{report_path}: missing; --report takes the folder `uprise eval` wrote")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    seed = report.get("config", {}).get("seed", 0)
    folders = ({args.report.name: args.report} if (args.report / PREDICTIONS_DIR).is_dir() else
               {d.name: d for d in sorted(args.report.iterdir()) if (d / PREDICTIONS_DIR).is_dir()})
    if not folders:
        raise SystemExit(f"{args.report}: no predictions/ folder in it or in its sub-folders")
    results = {name: compare(folder, pairs, seed) for name, folder in folders.items()}
    print(f"{'held out':<18} {'pair':<22} {'n':>5}  difference (95% CI), points")
    for name, diffs in results.items():
        for pair, d in diffs.items():
            print(f"{name:<18} {pair:<22} {d['n']:>5}  {100 * d['diff']:+.1f} "
                  f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]")
    if args.out:
        write_json(args.out, {"command": " ".join(sys.argv), "report": str(args.report),
                              "seed": seed, "pairs": results})


if __name__ == "__main__":
    main()
