"""The evaluation report as files: report.md (tables) and report.png (bar chart).

Contract: a *cluster report* is what `uprise.evaluation.summarise` returns (per method: task
values, cluster averages with `cluster_ci`, differences to zero-shot and to the best
baseline), optionally with "unparsable" counts per method and an "abstain" section. A
*multi-cluster report* holds `{"clusters": {cluster: cluster report}, "summary": ...}`.
`write_report_files(report, out)` writes `out/report.md` and `out/report.png` (matplotlib,
Agg backend) for either kind; report.json is written by the caller. Values are shown in points.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from statistics import mean
from typing import Any

from flan_data import atomic_write
from uprise.evaluation import changed_cell

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"
"""The JSON report's file name; each command writes it itself (this module: .md and .png)."""


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
    return "" if not d else (f"{100 * d['diff']:+.1f} "
                             f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]")


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
    """The ranking section (`uprise.ranking_eval`): each ranker's mean per metric against the
    LM's scores, and its difference from the reference ranker with a 95% CI."""
    ref = section["reference"]
    metrics = list(next(iter(section["methods"].values())))
    def cell(row: dict[str, Any]) -> str:
        d = row.get("vs_" + ref)
        ci = f" ({d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}])" if d else ""
        return f"{row['mean']:.3f}{ci}"

    rows = [[name, *(cell(row[m]) for m in metrics)] for name, row in section["methods"].items()]
    return ["", f"### Ranking vs LM scores ({section['n_queries']} queries x "
                f"{section['n_prompts']} shared pool prompts, LM `{section['lm']}`; "
                f"difference vs {ref})", "", *_table(["ranker", *metrics], rows)]


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


def _abstain_markdown(abstain: dict[str, Any]) -> list[str]:
    lines = ["", "## Abstention (trained+abstain)", ""]
    for cluster, cal in abstain.get("calibration", {}).items():
        lines.append(f"- held-out {cluster}: threshold {float(cal['threshold']):.4f} "
                     "calibrated on "
                     f"{cal['n']} training-cluster validation queries (abstains on "
                     f"{100 * cal['abstain_rate']:.0f}% of them)")
    effect = abstain.get("effect")
    if effect:
        lines += ["", f"Regressions (trained < zero-shot) removed: "
                  f"{effect['regressions_removed']} of {effect['regressions']}; gains kept "
                  f"(trained+abstain >= trained): {effect['gains_kept']} of {effect['gains']}.", ""]
        rows = [[c, *(f"{100 * r[m]:.1f}" for m in ("zero_shot", "trained", "trained+abstain")),
                 "yes" if r["regression"] else "no", "yes" if r["regression_removed"] else "no",
                 "yes" if r["gain_kept"] else "no"] for c, r in effect["clusters"].items()]
        lines += _table(["cluster", "zero_shot", "trained", "trained+abstain", "regression",
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
    atomic_write(out / "report.md", [markdown(report, title)])
    plot(report, out / "report.png", title)
    log.info("wrote %s and %s", out / "report.md", out / "report.png")
