"""bench/loco_table.py: one row per held-out cluster from saved reports, later reports winning,
the ranking carried over from an earlier report when the winning run skipped it or taken from a
ranking-only report, the verdicts read from the intervals, and bad input named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "loco_table.py"


def _ci(diff: float, low: float, high: float) -> dict[str, float]:
    return {"diff": diff, "low": low, "high": high}


def _cluster(trained: float, vs_best: dict, vs_zs: dict, ranking: dict | None) -> dict:
    report = {"tasks": {"t1": {"n": 100}, "t2": {"n": 50}}, "best_baseline": "bm25",
              "methods": {"zero_shot": {"average": 0.40}, "bm25": {"average": 0.45},
                          "trained": {"average": trained, "vs_best_baseline": vs_best,
                                      "vs_zero_shot": vs_zs}}}
    if ranking:
        report["ranking"] = {"methods": {"trained": {"ndcg@3": {"vs_untrained": ranking}}}}
    return report


def _write(path: Path, k: int, clusters: dict) -> Path:
    path.write_text(json.dumps({"config": {"k": k}, "clusters": clusters}))
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          check=False)


def test_rows_verdicts_and_the_later_report_winning(tmp_path: Path) -> None:
    screening = _write(tmp_path / "screen.json", 3, {
        "a": _cluster(0.50, _ci(0.05, 0.01, 0.09), _ci(0.10, 0.05, 0.15),
                      _ci(0.02, -0.01, 0.05)),
        "b": _cluster(0.30, _ci(-0.15, -0.20, -0.10), _ci(-0.10, -0.15, -0.05), None)})
    full = _write(tmp_path / "full.json", 3, {
        "a": _cluster(0.47, _ci(0.02, -0.01, 0.05), _ci(0.07, 0.02, 0.12), None)})
    out = tmp_path / "table.json"
    done = _run("--reports", str(screening), str(full), "--out", str(out))
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    a, b = written["rows"]["a"], written["rows"]["b"]
    assert a["source"] == str(full) and a["trained"] == 0.47 and a["n"] == 150
    assert a["ranking_vs_untrained"] == _ci(0.02, -0.01, 0.05)  # carried from the screening
    assert a["ranking_source"] == str(screening)
    assert not a["above_best"] and not a["below_zero_shot"]
    assert b["below_zero_shot"] and not b["above_best"] and b["ranking_vs_untrained"] is None
    assert written["above_best_baseline"] == [] and written["below_zero_shot"] == ["b"]
    assert "| a | 150 | 3 | 40.0 | bm25 45.0 | 47.0 | +2.0 [-1.0, +5.0] |" in done.stdout
    assert "-10.0 [-15.0, -5.0] **below** | not run |" in done.stdout
    done = _run("--reports", str(full), str(screening))  # order decides: the screening wins
    assert "+5.0 [+1.0, +9.0] **above**" in done.stdout


def test_bad_reports_are_named(tmp_path: Path) -> None:
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"methods": {}}))
    done = _run("--reports", str(single))
    assert done.returncode != 0 and f"{single}: no 'clusters' key" in done.stderr
    partial = _write(tmp_path / "partial.json", 1, {"c": {"tasks": {}, "methods": {}}})
    done = _run("--reports", str(partial))
    assert done.returncode != 0 and "cluster 'c' lacks 'best_baseline'" in done.stderr
    done = _run("--reports", str(tmp_path / "missing.json"))
    assert done.returncode != 0 and "missing.json: not a readable report.json" in done.stderr


def test_a_ranking_only_report_replaces_the_ranking_and_nothing_else(tmp_path: Path) -> None:
    full = _write(tmp_path / "full.json", 3, {
        "a": _cluster(0.47, _ci(0.02, -0.01, 0.05), _ci(0.07, 0.02, 0.12),
                      _ci(0.02, -0.01, 0.05))})
    ranking_only = {"tasks": {"t1": {"n": 100}}, "methods": {"zero_shot": {"average": 0.4}},
                    "ranking": {"methods": {"trained": {"ndcg@3": {
                        "vs_untrained": _ci(0.011, -0.008, 0.033)}}}}}
    ranked = _write(tmp_path / "ranked.json", 3, {"a": ranking_only})
    out = tmp_path / "table.json"
    done = _run("--reports", str(full), "--ranking-reports", str(ranked), "--out", str(out))
    assert done.returncode == 0, done.stderr
    a = json.loads(out.read_text())["rows"]["a"]
    assert a["ranking_vs_untrained"] == _ci(0.011, -0.008, 0.033)
    assert a["ranking_source"] == str(ranked) and a["source"] == str(full) and a["trained"] == 0.47
    unranked = _write(tmp_path / "unranked.json", 3, {"a": {"methods": {}}})
    done = _run("--reports", str(full), "--ranking-reports", str(unranked))
    assert done.returncode != 0 and "cluster 'a' has no ranking of 'trained'" in done.stderr
    other = _write(tmp_path / "other.json", 3, {"z": ranking_only})
    done = _run("--reports", str(full), "--ranking-reports", str(other))
    assert done.returncode != 0 and "cluster 'z' is in none of --reports" in done.stderr
