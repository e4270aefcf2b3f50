"""bench/pairwise.py: method differences from a report's predictions, against hand-computed cases.

The difference is the mean over the queries both methods answered, the interval is the report's
own stratified bootstrap (same seed, same query order), a leave-one-cluster-out report gives one
row per held-out folder, and bad input names the file and line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from uprise.evaluation.run import write_predictions
from uprise.evaluation.stats import paired_bootstrap

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "pairwise.py"


def _write_predictions(folder: Path, method: str, rows: list[tuple[str, str, float]]) -> None:
    """Rows as `uprise eval` writes them (its own writer)."""
    write_predictions({method: [{"query_id": qid, "task": task, "prediction": "x", "value": value,
                                 "n_prompts": 3, "parsed": True, "option": None}
                                for qid, task, value in rows]}, folder)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          check=False)


@pytest.fixture()
def loco_report(tmp_path: Path) -> Path:
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text(json.dumps({"config": {"seed": 7}}))
    held = report / "held"
    # trained answers q1..q4; untrained also q5, which trained lacks and must be ignored
    _write_predictions(held, "trained", [("q1", "a", 1.0), ("q2", "a", 0.0),
                                         ("q3", "b", 0.5), ("q4", "b", 1.0)])
    _write_predictions(held, "untrained", [("q4", "b", 0.0), ("q3", "b", 0.5),
                                           ("q2", "a", 0.0), ("q1", "a", 0.0),
                                           ("q5", "b", 1.0)])
    return report


def test_difference_and_interval_match_the_reports_bootstrap(loco_report: Path) -> None:
    out = loco_report.parent / "pairs.json"
    done = _run("--report", str(loco_report), "--pairs", "trained:untrained", "--out", str(out))
    assert done.returncode == 0, done.stderr
    got = json.loads(out.read_text())["pairs"]["held"]["trained-untrained"]
    # per-query differences in trained's order: q1 +1, q2 0, q3 0, q4 +1 -> mean 0.5, n = 4
    assert got["n"] == 4
    assert got["diff"] == pytest.approx(0.5)
    want = paired_bootstrap([1.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.5, 0.0], seed=7,
                            groups=["a", "a", "b", "b"])
    assert (got["low"], got["high"]) == pytest.approx((want["low"], want["high"]))
    assert "held" in done.stdout and "+50.0" in done.stdout


def test_missing_method_and_bad_rows_are_named(loco_report: Path) -> None:
    done = _run("--report", str(loco_report), "--pairs", "trained:bm25")
    assert done.returncode != 0 and "bm25.jsonl" in done.stderr and "trained" in done.stderr
    bad = loco_report / "held" / "predictions" / "untrained.jsonl"
    bad.write_text(bad.read_text() + "{\"query_id\": \"q9\"}\n")
    done = _run("--report", str(loco_report), "--pairs", "trained:untrained")
    assert done.returncode != 0 and f"{bad}:6" in done.stderr
    done = _run("--report", str(loco_report), "--pairs", "trained-untrained")
    assert done.returncode != 0 and "METHOD:METHOD" in done.stderr


def test_exclude_report_keeps_only_rows_the_earlier_evaluation_never_saw(
        loco_report: Path, tmp_path: Path) -> None:
    screening = tmp_path / "screening"
    # the earlier, smaller evaluation answered q1 and q3 (one method is enough to exclude them)
    _write_predictions(screening / "held", "zero_shot", [("q1", "a", 0.0), ("q3", "b", 1.0)])
    out = tmp_path / "rest.json"
    done = _run("--report", str(loco_report), "--pairs", "trained:untrained",
                "--exclude-report", str(screening), "--out", str(out))
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    got = written["pairs"]["held"]["trained-untrained"]
    # left: q2 (a: 0 vs 0) and q4 (b: 1 vs 0) -> mean +0.5, n = 2; task means 0.5 and 0.0
    assert got["n"] == 2 and got["diff"] == pytest.approx(0.5)
    assert (got["mean_a"], got["mean_b"]) == pytest.approx((0.5, 0.0))
    want = paired_bootstrap([0.0, 1.0], [0.0, 0.0], seed=7, groups=["a", "b"])
    assert (got["low"], got["high"]) == pytest.approx((want["low"], want["high"]))
    assert written["excluded"] == {"held": 2}


def test_exclude_report_must_cover_every_held_out_folder(loco_report: Path,
                                                         tmp_path: Path) -> None:
    other = tmp_path / "other"
    _write_predictions(other / "another_cluster", "trained", [("q1", "a", 1.0)])
    done = _run("--report", str(loco_report), "--pairs", "trained:untrained",
                "--exclude-report", str(other))
    assert done.returncode != 0 and "['held']" in done.stderr and str(other) in done.stderr
    done = _run("--report", str(loco_report), "--pairs", "trained:untrained",
                "--exclude-report", str(tmp_path / "missing"))
    assert done.returncode != 0 and "missing: not a folder" in done.stderr
    _write_predictions(other / "held", "trained", [(q, "a", 1.0) for q in
                                                   ("q1", "q2", "q3", "q4")])
    done = _run("--report", str(loco_report), "--pairs", "trained:untrained",
                "--exclude-report", str(other))
    assert done.returncode != 0 and "share no query outside --exclude-report" in done.stderr


def test_pooled_weighs_each_held_out_folder_the_same(loco_report: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.json").write_text(json.dumps({"config": {"seed": 7}}))
    # a second held-out cluster, one task, trained never better: differences 0, 0, 0, -1
    _write_predictions(other / "held2", "trained", [(f"r{i}", "c", v)
                                                    for i, v in enumerate([1.0, 0.0, 0.0, 0.0])])
    _write_predictions(other / "held2", "untrained", [(f"r{i}", "c", v)
                                                      for i, v in enumerate([1.0, 0.0, 0.0, 1.0])])
    out = tmp_path / "pooled.json"
    done = _run("--report", str(loco_report), str(other), "--pairs", "trained:untrained",
                "--pooled", "--out", str(out))
    assert done.returncode == 0, done.stderr
    pairs = json.loads(out.read_text())["pairs"]
    assert set(pairs) == {"held", "held2", "pooled"}
    got = pairs["pooled"]["trained-untrained"]
    # held: tasks a (+1, 0) and b (0, +1) average +0.5; held2: -0.25; the two folders weigh the
    # same although held has two tasks: (0.5 - 0.25) / 2
    assert got["diff"] == pytest.approx(0.125)
    assert got["n"] == 8 and got["n_by_held_out"] == {"held": 4, "held2": 4}
    assert (got["mean_a"], got["mean_b"]) == pytest.approx(((0.625 + 0.25) / 2,
                                                            (0.125 + 0.5) / 2))
    want = paired_bootstrap([1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.0, 0.0],
                            [0.0, 0.0, 0.5, 0.0, 1.0, 0.0, 0.0, 1.0], seed=7,
                            groups=["held/a", "held/a", "held/b", "held/b", *["held2/c"] * 4],
                            weights={"held/a": 0.25, "held/b": 0.25, "held2/c": 0.5})
    assert (got["low"], got["high"]) == pytest.approx((want["low"], want["high"]))
    assert "pooled" in done.stdout and "+12.5" in done.stdout
    done = _run("--report", str(loco_report), str(loco_report), "--pairs", "trained:untrained")
    assert done.returncode != 0 and "['held'] also in an earlier --report" in done.stderr


def test_one_held_out_folder_of_a_report_is_compared_with_the_reports_seed(
        loco_report: Path) -> None:
    held = loco_report / "held"
    out = loco_report.parent / "held.json"
    (held / "report.json").write_text(json.dumps({"data_manifest": {"seed": 7}}))
    done = _run("--report", str(held), "--pairs", "trained:untrained", "--out", str(out))
    assert done.returncode == 0, done.stderr
    got = json.loads(out.read_text())
    assert got["seed"] == 7
    want = paired_bootstrap([1.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.5, 0.0], seed=7,
                            groups=["a", "a", "b", "b"])
    pair = got["pairs"]["held"]["trained-untrained"]
    assert (pair["low"], pair["high"]) == pytest.approx((want["low"], want["high"]))
    (held / "report.json").write_text(json.dumps({"config": {}}))
    done = _run("--report", str(held), "--pairs", "trained:untrained")
    assert done.returncode != 0 and "no seed in config.seed or data_manifest.seed" in done.stderr
