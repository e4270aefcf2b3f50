"""Shared files under damage and contention: a damaged score-cache entry is skipped, counted and
recomputed (never blocking a run); a score folder is locked by one run; `uprise score` checks
its options before it makes the folder or loads the LM."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import proxy_lm.cli as score_cli
from flan_data import write_stage_data
from flan_data.protocol import StageData
from proxy_lm import load_lm, read_scores, score_candidates
from proxy_lm.score_cache import ScoreCache
from proxy_lm.shards import LOCK_FILE, ScoreFolderLocked, score_folder_lock

REPO = Path(__file__).resolve().parents[2]


def _segment(folder: Path, name: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_damaged_lines_are_skipped_counted_and_named(tmp_path, caplog):
    good = _segment(tmp_path, "seg-a.jsonl", [json.dumps({"k": "a", "l": [1.0, 2.0]})])
    bad = _segment(tmp_path, "seg-b.jsonl", [
        json.dumps({"k": "b", "l": [0.5]}),
        '{"k": "c", "l": [0.2',  # truncated
        json.dumps({"k": "d", "l": "oops"}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"k": "e", "l": [3.0]}),
    ])
    cache = ScoreCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="proxy_lm.segment_cache"):
        got = cache.get(["a", "b", "c", "d", "e"])
    assert got == {"a": [1.0, 2.0], "b": [0.5], "e": [3.0]}
    assert cache.damaged == 3
    warnings = [r.getMessage() for r in caplog.records]
    assert any(str(bad) in w and "line 2" in w for w in warnings)
    assert any(str(bad) in w and "line 4" in w for w in warnings)
    assert not any(str(good) in w for w in warnings)


def test_invalid_utf8_in_a_segment_does_not_block(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "seg-x.jsonl").write_bytes(b'{"k": "a", "l": [1.0]}\n\xff\xfe{"k"\n')
    cache = ScoreCache(tmp_path)
    assert cache.get(["a"]) == {"a": [1.0]} and cache.damaged == 1


def test_a_run_over_a_damaged_cache_recomputes_the_damaged_pairs(
        tiny_gpt_neo_path, scoring_data, tmp_path, private_score_cache):
    queries, prompts, candidates = scoring_data
    lm = load_lm(str(tiny_gpt_neo_path), dtype="float32")
    first = score_candidates(lm, queries, prompts, candidates, tmp_path / "a", progress=False)
    segments = sorted(private_score_cache.glob("*/seg-*.jsonl"))
    lines = segments[0].read_text().splitlines()
    segments[0].write_text("\n".join([*lines[:-1], lines[-1][: len(lines[-1]) // 2]]) + "\n")

    calls: list[int] = []
    lm.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    again = score_candidates(lm, queries, prompts, candidates, tmp_path / "b", progress=False)
    assert again == first
    assert calls  # the damaged entry's pair was computed again
    cache = ScoreCache(segments[0].parent)
    cache.get(["anything"])
    assert cache.damaged == 1  # and its new losses went to a new segment
    assert len(list(private_score_cache.glob("*/seg-*.jsonl"))) == len(segments) + 1


HOLD = """
import sys, time
from proxy_lm.shards import score_folder_lock
with score_folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def stage_dir(scoring_data, tmp_path) -> Path:
    queries, prompts, candidates = scoring_data
    stage = StageData(pool=list(prompts.values()), train_queries=list(queries.values()),
                      eval_queries=[], candidates=candidates, manifest={"test": True})
    return write_stage_data(stage, tmp_path / "data")


def test_a_second_score_run_on_a_held_folder_fails_at_once(stage_dir, tmp_path, monkeypatch):
    out = tmp_path / "scores"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(score_cli, "load_lm", lambda *a, **k: pytest.fail("LM loaded"))
        start = time.monotonic()
        with pytest.raises(ScoreFolderLocked, match=f"{out}: another `uprise score` run holds"):
            score_cli.score_main(["--data", str(stage_dir), "--output-dir", str(out)])
        assert time.monotonic() - start < 10
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with score_folder_lock(out):  # the lock went with the killed process
        pass


def test_the_lock_file_does_not_make_the_folder_foreign(tiny_gpt_neo_path, scoring_data,
                                                         tmp_path):
    queries, prompts, candidates = scoring_data
    lm = load_lm(str(tiny_gpt_neo_path), dtype="float32")
    out = tmp_path / "scores"
    with score_folder_lock(out):
        assert (out / LOCK_FILE).is_file()
        score_candidates(lm, queries, prompts, candidates, out, shard_size=5, progress=False,
                         score_cache=False)
        with pytest.raises(ScoreFolderLocked), score_folder_lock(out):
            pass  # a second lock, even in this process, is refused
    assert len(read_scores(out)) == sum(len(c.prompt_ids) for c in candidates)


@pytest.mark.parametrize(("option", "message"), [
    (["--shard-size", "0"], "--shard-size 0: expected a positive integer"),
    (["--shard-size", "-5"], "--shard-size -5: expected a positive integer"),
    (["--batch-size", "0"], "--batch-size 0: expected a positive integer"),
    (["--num-nodes", "0"], "--num-nodes 0"),
    (["--devices", "0"], "--devices 0"),
])
def test_score_refuses_bad_sizes_before_making_the_folder(stage_dir, tmp_path, capsys,
                                                          monkeypatch, option, message):
    monkeypatch.setattr(score_cli, "load_lm", lambda *a, **k: pytest.fail("LM loaded"))
    out = tmp_path / "scores"
    with pytest.raises(SystemExit) as exit_info:
        score_cli.score_main(["--data", str(stage_dir), "--output-dir", str(out), *option])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_score_reads_the_data_before_making_the_folder(tmp_path):
    out = tmp_path / "scores"
    with pytest.raises(FileNotFoundError, match="uprise data"):
        score_cli.score_main(["--data", str(tmp_path / "missing"), "--output-dir", str(out)])
    assert not out.exists()
