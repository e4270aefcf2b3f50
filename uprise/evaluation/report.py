"""The evaluation report as files: report.md (tables) and report.png (bar chart).

Contract: a *cluster report* is what `summary.summarise` returns (per method: task
values, cluster averages with `cluster_ci`, differences to zero-shot and to the best
baseline), optionally with "unparsable" counts per method and an "abstain" section. A
*multi-cluster report* holds `{"clusters": {cluster: cluster report}, "summary": ...}`.
`write_report_files(report, out)` writes `out/report.md` and `out/report.png` (matplotlib,
Agg backend) for either kind; `format_table(report)` is a cluster report as plain text (the
quickstart prints it); report.json is written by the caller. Values are shown in points. This
module is the only reader of the report dict.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from statistics import mean
from typing import Any

from flan_data import atomic_write
from uprise.evaluation.methods import ABSTAIN
from uprise.evaluation.stats import format_diff

log = logging.getLogger(__name__)
REPORT_FILE, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"
"""The report's file names; each command writes report.json itself, this module the others."""


def json_safe(obj: Any) -> Any:
    """`obj` with non-finite floats as the strings "inf", "-inf", "nan" (strict JSON has no
    Infinity; `float()` reads the strings back), e.g. a never-abstain threshold of -inf."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def cluster_bars(report: dict[str, Any]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """method -> cluster -> (average, CI low, CI high), from one or many cluster reports."""
    parts = list(report["clusters"].values()) if "clusters" in report else [report]
    bars: dict[str, dict[str, tuple[float, float, float]]] = {}
    for part in parts:
        for method, result in part["methods"].items():
            for cluster, value in result["clusters"].items():
                low, high = result.get("cluster_ci", {}).get(cluster, (value, value))
                bars.setdefault(method, {})[cluster] = (value, low, high)
    return bars


def summary(report_by_cluster: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Cluster averages per method across held-out clusters, and their mean."""
    bars = cluster_bars({"clusters": report_by_cluster})
    return {"methods": {m: {"clusters": {c: v[0] for c, v in by.items()},
                            "cluster_ci": {c: [v[1], v[2]] for c, v in by.items()},
                            "average": mean(v[0] for v in by.values())}
                        for m, by in bars.items()}}


def _ci(d: dict[str, float] | None) -> str:
    return format_diff(d) if d else ""


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def cluster_markdown(report: dict[str, Any]) -> list[str]:
    """The per-task table of one cluster report, with the bootstrap rows."""
    methods = list(report["methods"])
    res = report["methods"]
    rows = [[t, info["metric"], str(info["n"]), *(f"{100 * res[m]['tasks'][t]:.1f}"
                                                   for m in methods)]
            for t, info in report["tasks"].items()]
    rows.append(["**average**", "", "", *(f"**{100 * res[m]['average']:.1f}**" for m in methods)])
    rows.append(["vs zero-shot (95% CI)", "", "", *(_ci(res[m].get("vs_zero_shot"))
                                                    for m in methods)])
    best = report.get("best_baseline")
    if best:
        rows.append([f"vs best baseline ({best})", "", "",
                     *(_ci(res[m].get("vs_best_baseline")) for m in methods)])
    if any(res[m].get("changed_vs_zero_shot") for m in methods):
        rows.append(["answers changed vs zero-shot, % (95% CI)", "", "",
                     *(changed_cell(res[m]) for m in methods)])
    if any(res[m].get("unparsable") for m in methods):
        rows.append(["unparsable replies", "", "", *(str(res[m].get("unparsable", 0))
                                                     for m in methods)])
    lines = _table(["task", "metric", "n", *methods], rows)
    paper = sorted({t for m in methods for t in res[m].get("paper_metrics", {})})
    if paper:
        lines += ["", "Corpus-level metrics as the paper reports them for these tasks:", ""]
        lines += _table(["task", "metric", *methods], [
            [t, res[methods[0]]["paper_metrics"][t]["metric"],
             *(f"{100 * res[m]['paper_metrics'][t]['value']:.1f}" for m in methods)]
            for t in paper])
    return lines


def ranking_markdown(section: dict[str, Any]) -> list[str]:
    """The ranking section (`ranking.py`): each ranker's mean per metric against the
    LM's scores, and its difference from the reference ranker with a 95% CI."""
    ref = section["reference"]
    metrics = list(next(iter(section["methods"].values())))
    def cell(row: dict[str, Any]) -> str:
        d = row.get("vs_" + ref)
        ci = f" ({format_diff(d, 1, 3)})" if d else ""
        return f"{row['mean']:.3f}{ci}"

    rows = [[name, *(cell(row[m]) for m in metrics)] for name, row in section["methods"].items()]
    return ["", f"### Ranking vs LM scores ({section['n_queries']} queries x "
                f"{section['n_prompts']} shared pool prompts, LM `{section['lm']}`; "
                f"difference vs {ref})", "", *_table(["ranker", *metrics], rows)]


def hybrid_markdown(hybrid: dict[str, Any]) -> list[str]:
    """One line: the hybrid's weight and, when it was chosen (`uprise.evaluation.hybrid`), on
    how many validation queries and by what margin over its two ends."""
    w = hybrid["weight"]
    if "curve" not in hybrid:
        return ["", f"Hybrid weight {w} ({hybrid.get('source', 'given')})."]
    curve = hybrid["curve"]
    return ["", f"Hybrid weight {w}, chosen by {hybrid['metric']} on {hybrid['n_queries']} "
                f"validation queries of the trained retriever's training: {curve[str(w)]:.3f} "
                f"(dense alone {curve.get('1.0', float('nan')):.3f}, BM25 alone "
                f"{curve.get('0.0', float('nan')):.3f})."]


def _summary_markdown(report: dict[str, Any]) -> list[str]:
    bars = cluster_bars(report)
    methods = list(bars)
    clusters = sorted({c for by in bars.values() for c in by})
    rows = [[c, *(f"{100 * bars[m][c][0]:.1f} [{100 * bars[m][c][1]:.1f}, "
                  f"{100 * bars[m][c][2]:.1f}]" if c in bars[m] else "" for m in methods)]
            for c in clusters]
    rows.append(["**mean of clusters**", *(f"**{100 * mean(v[0] for v in bars[m].values()):.1f}**"
                                          for m in methods)])
    return _table(["held-out cluster", *methods], rows)


def _count(calibration: dict[str, Any]) -> int:
    """How many of a calibration's n queries it abstains on: a count, so that 479 of 480 never
    reads as "100%"."""
    return round(calibration["abstain_rate"] * calibration["n"])


def _abstain_markdown(abstain: dict[str, Any]) -> list[str]:
    lines = ["", "## Abstention (trained+abstain)", ""]
    for cluster, cal in abstain.get("calibration", {}).items():
        by_kind = cal.get("abstain_by") == "kind"
        lines.append(f"- held-out {cluster}: threshold {float(cal['threshold']):.4f} "
                     f"{'(for a kind without its own) ' * by_kind}calibrated on "
                     f"{cal['n']} training-cluster validation queries (abstains on "
                     f"{_count(cal)} of them)")
        for kind, sub in cal.get("by_kind", {}).items() if by_kind else ():
            lines.append(f"  - {kind} queries: threshold {float(sub['threshold']):.4f} from "
                         f"{sub['n']} of them (abstains on {_count(sub)}; "
                         f"metric with prompts {100 * sub['with_prompts_metric']:.1f}, "
                         f"zero-shot {100 * sub['zero_shot_metric']:.1f})")
    effect = abstain.get("effect")
    if effect:
        lines += ["", f"Regressions (trained < zero-shot) removed: "
                  f"{effect['regressions_removed']} of {effect['regressions']}; gains kept "
                  f"(trained+abstain >= trained): {effect['gains_kept']} of {effect['gains']}.", ""]
        rows = [[c, *(f"{100 * r[m]:.1f}" for m in ("zero_shot", "trained", ABSTAIN)),
                 "yes" if r["regression"] else "no", "yes" if r["regression_removed"] else "no",
                 "yes" if r["gain_kept"] else "no"] for c, r in effect["clusters"].items()]
        lines += _table(["cluster", "zero_shot", "trained", ABSTAIN, "regression",
                         "removed", "gain kept"], rows)
    return lines


def markdown(report: dict[str, Any], title: str = "Evaluation") -> str:
    config = report.get("config", {})
    lines = [f"# {title}", ""]
    for key in ("lm", "lm_name", "eval_lm", "scoring_lm", "k", "seed"):
        if config.get(key) is not None:
            lines.append(f"- {key}: `{config[key]}`")
    lines += ["", "## Cluster averages (95% bootstrap CI)", "", *_summary_markdown(report)]
    parts = report["clusters"] if "clusters" in report else {"": report}
    for cluster, part in parts.items():
        lines += ["", f"## Held-out cluster {cluster}" if cluster else "## Tasks", ""]
        lines += cluster_markdown(part)
        if part.get("hybrid"):
            lines += hybrid_markdown(part["hybrid"])
        if part.get("ranking"):
            lines += ranking_markdown(part["ranking"])
    if report.get("abstain"):
        lines += _abstain_markdown(report["abstain"])
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path, title: str = "") -> Path:
    """Grouped bars: per held-out cluster, each method's average with its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    bars = cluster_bars(report)
    methods = list(bars)
    clusters = sorted({c for by in bars.values() for c in by})
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(clusters) + 2), 4.6))
    for i, m in enumerate(methods):
        vals = np.array([bars[m].get(c, (np.nan,) * 3) for c in clusters]) * 100  # (clusters, 3)
        yerr = np.abs(np.stack([vals[:, 0] - vals[:, 1], vals[:, 2] - vals[:, 0]]))  # (2, clusters)
        x = np.arange(len(clusters)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(x, vals[:, 0], width, yerr=yerr, capsize=3, label=m)
    ax.set_xticks(np.arange(len(clusters)), clusters)
    ax.set_ylabel("cluster average (points)")
    ax.set_title(title or "held-out cluster averages, 95% bootstrap CI")
    ax.legend(fontsize="small", ncols=min(3, len(methods)), loc="upper center",
              bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report_files(report: dict[str, Any], out: str | Path, title: str = "Evaluation") -> None:
    out = Path(out)
    atomic_write(out / REPORT_MD, [markdown(report, title)])
    plot(report, out / REPORT_PNG, title)
    log.info("wrote %s and %s", out / REPORT_MD, out / REPORT_PNG)


def _ci_cells(report: dict[str, Any], methods: list[str], key: str) -> list[str]:
    cells = []
    for m in methods:
        d = report["methods"][m].get(key)
        cells.append(format_diff(d, sep=",") if d else "")
    return cells


def changed_cell(result: dict[str, Any]) -> str:
    """'rate [low,high]' in % of queries whose answer differs from zero-shot's, or ''."""
    c = result.get("changed_vs_zero_shot")
    return f"{100 * c['rate']:.1f} [{100 * c['low']:.1f},{100 * c['high']:.1f}]" if c else ""


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: one row per task plus the average, one column per method, and the
    paired-bootstrap difference to zero-shot (and to the best baseline, when that is another
    method) with its 95% CI (all in points)."""
    methods = list(report["methods"])
    extra = [("vs zero-shot", _ci_cells(report, methods, "vs_zero_shot"))]
    if report.get("best_baseline") not in (None, "zero_shot"):
        extra.append((f"vs {report['best_baseline']}",
                      _ci_cells(report, methods, "vs_best_baseline")))
    width = max([12, *map(len, methods), *(len(c) for _, cells in extra for c in cells)])
    rows = [(task, info["metric"], str(info["n"]),
             [f"{100 * report['methods'][m]['tasks'][task]:.1f}" for m in methods])
            for task, info in report["tasks"].items()]
    rows.append(("average", "", "", [f"{100 * report['methods'][m]['average']:.1f}"
                                     for m in methods]))
    rows += [(label, "", "", cells) for label, cells in extra]
    if any("changed_vs_zero_shot" in report["methods"][m] for m in methods):
        rows.append(("changed vs zs", "", "",
                     [changed_cell(report["methods"][m]) for m in methods]))
    lines = [f"{task:16s} {metric:12s} {n:>5s} " + " ".join(f"{c:>{width}s}" for c in cells)
             for task, metric, n, cells in [("task", "metric", "n", methods), *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
