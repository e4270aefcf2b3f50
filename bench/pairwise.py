"""Paired differences between the methods of an `uprise eval` report, from its predictions.

`report.json` compares every method with zero-shot and with the best baseline; this adds any
other pair (e.g. trained against untrained: what training added over the starting encoder),
with the same statistic: the mean per-example difference over the queries both methods
answered, a paired bootstrap 95% CI stratified by task, and the report's own seed.

    python bench/pairwise.py --report RUN/report --pairs trained:untrained trained:bm25 \
        --out bench/results/pairwise.json

--report is the folder `uprise eval` wrote: a leave-one-cluster-out report (one sub-folder per
held-out cluster, each with predictions/) or a single-run one (predictions/ in it), or one
held-out cluster's folder of a leave-one-cluster-out report; several folders may be given (their
held-out names must differ), each compared with its own seed: e.g. to pool a cluster from a
later, larger run with the other clusters of an earlier one, give those cluster folders one by
one.

--pooled adds, per pair, the mean over every held-out folder of the given reports (each folder
weighs the same, tasks the same within a folder: the report's "mean of clusters"), with a
paired bootstrap stratified by folder and task (the first report's seed): more power than any
one cluster's row for "does trained differ from untrained on average over held-out clusters".

    python bench/pairwise.py --report RUN_A/report RUN_B/report --pairs trained:untrained \
        --pooled --out bench/results/pooled.json

--exclude-report OTHER drops every query that OTHER's matching folder answered (any method):
a replication on rows an earlier, smaller evaluation never saw, e.g. the full splits of a
cluster picked because its screening sample looked good, judged on the rest of the split.
Each pair also gets both methods' task-averaged means on the compared queries, so the best of
several baselines is the pair with the smallest difference.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import write_json  # noqa: E402
from uprise.evaluation.run import PREDICTIONS_DIR, read_predictions  # noqa: E402
from uprise.evaluation.stats import format_diff, paired_bootstrap  # noqa: E402


@functools.cache
def _by_query(folder: Path, method: str) -> dict[str, tuple[str, float]]:
    """query_id -> (task, metric value) of one method's predictions, in the evaluation's order
    (read once per run of the script: `compare` and `pooled` both ask; callers do not mutate it)."""
    try:
        rows = read_predictions(folder, method)
    except (OSError, ValueError) as err:
        raise SystemExit(str(err)) from err
    return {r["query_id"]: (r["task"], float(r["value"])) for r in rows}


def _answered(folder: Path) -> set[str]:
    """Every query id that any method of one predictions/ folder answered."""
    files = sorted((folder / PREDICTIONS_DIR).glob("*.jsonl"))
    if not files:
        raise SystemExit(f"{folder / PREDICTIONS_DIR}: no predictions to exclude")
    return {qid for f in files for qid in _by_query(folder, f.stem)}


def _task_mean(values: dict[str, tuple[str, float]], ids: list[str]) -> float:
    """The mean over tasks of each task's mean value on `ids` (the report's cluster average)."""
    by_task: dict[str, list[float]] = {}
    for i in ids:
        by_task.setdefault(values[i][0], []).append(values[i][1])
    return sum(sum(v) / len(v) for v in by_task.values()) / len(by_task)


def compare(folder: Path, pairs: list[tuple[str, str]], seed: int,
            exclude: set[str] = frozenset()) -> dict[str, dict]:
    """Every pair (a, b) on the queries of one predictions/ folder not in `exclude`: a - b with
    its CI, and both task-averaged means."""
    out = {}
    for a, b in pairs:
        va, vb, ids = _paired(folder, a, b, exclude)
        ci = paired_bootstrap([va[i][1] for i in ids], [vb[i][1] for i in ids], seed=seed,
                              groups=[va[i][0] for i in ids])
        out[f"{a}-{b}"] = {**ci, "n": len(ids), "mean_a": _task_mean(va, ids),
                           "mean_b": _task_mean(vb, ids)}
    return out


def pooled(folders: dict[str, Path], pairs: list[tuple[str, str]], seed: int,
           excluded: dict[str, set[str]]) -> dict[str, dict]:
    """Every pair (a, b) over all `folders` at once: the mean over folders of each folder's
    task-averaged a - b, with a bootstrap stratified by folder/task, each stratum weighted
    1 / (folders x the folder's tasks); both methods' means the same way."""
    out = {}
    for a, b in pairs:
        da, db, groups, weights, n, means = [], [], [], {}, {}, []
        for name, folder in folders.items():
            va, vb, ids = _paired(folder, a, b, excluded[name])
            da += [va[i][1] for i in ids]
            db += [vb[i][1] for i in ids]
            groups += [f"{name}/{va[i][0]}" for i in ids]
            tasks = {va[i][0] for i in ids}
            weights |= {f"{name}/{t}": 1 / (len(folders) * len(tasks)) for t in tasks}
            n[name] = len(ids)
            means.append((_task_mean(va, ids), _task_mean(vb, ids)))
        ci = paired_bootstrap(da, db, seed=seed, groups=groups, weights=weights)
        out[f"{a}-{b}"] = {**ci, "n": sum(n.values()), "n_by_held_out": n,
                           "mean_a": sum(m[0] for m in means) / len(means),
                           "mean_b": sum(m[1] for m in means) / len(means)}
    return out


def _paired(folder: Path, a: str, b: str, exclude: set[str]
            ) -> tuple[dict[str, tuple[str, float]], dict[str, tuple[str, float]], list[str]]:
    """Both methods' predictions of one folder and the ids they share outside `exclude`, in
    the evaluation's query order (a's)."""
    va, vb = _by_query(folder, a), _by_query(folder, b)
    ids = [i for i in va if i in vb and i not in exclude]
    if not ids:
        raise SystemExit(f"{folder}: {a} and {b} share no query"
                         + (" outside --exclude-report" if exclude else ""))
    return va, vb, ids


def _folders(report: Path) -> dict[str, Path]:
    """Held-out name -> folder with predictions/ (one for a single run)."""
    if not report.is_dir():
        raise SystemExit(f"{report}: not a folder; give the folder `uprise eval` wrote")
    if (report / PREDICTIONS_DIR).is_dir():
        return {report.name: report}
    return {d.name: d for d in sorted(report.iterdir()) if (d / PREDICTIONS_DIR).is_dir()}


def _excluded(folders: dict[str, Path], report: Path, others: list[Path]) -> dict[str, set[str]]:
    """Per held-out folder, the query ids any of `others` answered for the same held-out name
    (two single-run folders match each other); every folder must be covered when others are
    given, so a misspelt path cannot silently exclude nothing."""
    excluded: dict[str, set[str]] = {name: set() for name in folders}
    covered: set[str] = set()
    for other in others:
        two_single_runs = all((r / PREDICTIONS_DIR).is_dir() for r in (report, other))
        found = {name: other for name in folders} if two_single_runs else _folders(other)
        for name in set(found) & set(folders):
            excluded[name] |= _answered(found[name])
            covered.add(name)
    lacking = sorted(set(folders) - covered) if others else []
    if lacking:
        raise SystemExit(f"--exclude-report {' '.join(map(str, others))}: no predictions/ for "
                         f"{lacking}; give a folder `uprise eval` wrote for each held-out name")
    return excluded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report", required=True, type=Path, nargs="+",
                   help="folder(s) `uprise eval` wrote")
    p.add_argument("--pairs", nargs="+", required=True, metavar="A:B",
                   help="method pairs, e.g. trained:untrained")
    p.add_argument("--exclude-report", type=Path, nargs="+", default=[], metavar="OTHER",
                   help="drop the queries these other `uprise eval` folders answered")
    p.add_argument("--pooled", action="store_true",
                   help="also the mean over every held-out folder (module docstring)")
    p.add_argument("--out", type=Path, help="JSON output (default: print only)")
    args = p.parse_args()
    pairs = []
    for spec in args.pairs:
        a, sep, b = spec.partition(":")
        if not (sep and a and b):
            raise SystemExit(f"--pairs: {spec!r} is not METHOD:METHOD (e.g. trained:untrained)")
        pairs.append((a, b))
    folders, excluded, seeds = {}, {}, {}
    for report in args.report:
        seed = _seed(report)
        found = _folders(report)
        if not found:
            raise SystemExit(f"{report}: no predictions/ folder in it or in its sub-folders")
        twice = sorted(set(found) & set(folders))
        if twice:
            raise SystemExit(f"{report}: held-out {twice} also in an earlier --report; give each "
                             "held-out cluster once")
        folders |= found
        excluded |= _excluded(found, report, args.exclude_report)
        seeds |= {name: seed for name in found}
    results = {name: compare(folder, pairs, seeds[name], excluded[name])
               for name, folder in folders.items()}
    pool_seed = seeds[next(iter(folders))]
    if args.pooled:
        results["pooled"] = pooled(folders, pairs, pool_seed, excluded)
    print(f"{'held out':<18} {'pair':<22} {'n':>5}  {'means':>13}  difference (95% CI), points")
    for name, diffs in results.items():
        for pair, d in diffs.items():
            means = f"{100 * d['mean_a']:5.1f} {100 * d['mean_b']:5.1f}"
            print(f"{name:<18} {pair:<22} {d['n']:>5}  {means:>13}   {format_diff(d)}")
    if args.out:
        reports = [str(r) for r in args.report]
        write_json(args.out, {"command": " ".join(sys.argv),
                              "report": reports[0] if len(reports) == 1 else reports,
                              "exclude_reports": [str(r) for r in args.exclude_report],
                              "excluded": {n: len(e) for n, e in excluded.items()},
                              "seed": pool_seed if len(set(seeds.values())) == 1 else seeds,
                              "pairs": results})


def _seed(report: Path) -> int:
    """The seed `uprise eval` ran with, from the folder's report.json: its config's, or for one
    held-out cluster's sub-folder of a leave-one-cluster-out report, its stages' (the same)."""
    path = report / "report.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; --report takes the folder `uprise eval` wrote")
    found = json.loads(path.read_text(encoding="utf-8"))
    seed = found.get("config", {}).get("seed", found.get("data_manifest", {}).get("seed"))
    if not isinstance(seed, int):
        raise SystemExit(f"{path}: no seed in config.seed or data_manifest.seed; --report takes "
                         "a folder `uprise eval` wrote, or one held-out cluster's folder in it")
    return seed


if __name__ == "__main__":
    main()
