"""bench/subset_data.py: a seeded per-task subset of a data stage that reads back as a stage."""

from __future__ import annotations

import random

import pytest
from bench_scripts import load_script

from flan_data.protocol import StageData
from flan_data.schema import Candidates, Prompt, Query
from flan_data.stage_io import read_stage_data, write_stage_data


def _stage() -> StageData:
    sst2 = [Query(f"sst2:train:{i}", "sst2", "sentiment", 0, f"film {i}",
                  ["negative", "positive"], i % 2) for i in range(5)]
    gen = [Query(f"common_gen:train:{i}", "common_gen", "struct_to_text", 0, f"dog {i}",
                 references=["A dog."]) for i in range(3)]
    queries = [*sst2, *gen]
    pool = [Prompt("p0", "imdb", "sentiment", 0, "Nice. positive")]
    return StageData(pool=pool, train_queries=queries, eval_queries=[],
                     candidates=[Candidates(q.id, ["p0"]) for q in queries],
                     manifest={"seed": 1, "counts": {"pool": 1, "train_queries": 8,
                                                     "eval_queries": 0}})


def test_keeps_seeded_queries_of_choice_tasks_with_their_candidates(tmp_path):
    sub = load_script("subset_data").subset_stage(_stage(), 2, seed=3, choice_only=True,
                                                  source="SRC")
    ids = sorted(f"sst2:train:{i}" for i in range(5))
    expected = set(random.Random(3).sample(ids, 2))
    assert {q.id for q in sub.train_queries} == expected
    assert {c.query_id for c in sub.candidates} == expected
    assert sub.manifest["counts"]["train_queries"] == 2 and sub.manifest["seed"] == 1
    assert sub.manifest["subset_of"] == {"folder": "SRC", "tasks": ["sst2"], "per_task": 2,
                                         "seed": 3, "choice_only": True}
    back = read_stage_data(write_stage_data(sub, tmp_path / "sub"))  # counts check passes
    assert [q.id for q in back.train_queries] == [q.id for q in sub.train_queries]


def test_all_tasks_and_short_tasks_kept_whole():
    sub = load_script("subset_data").subset_stage(_stage(), 4, seed=0, choice_only=False)
    by_task = [q.task for q in sub.train_queries]
    assert by_task.count("sst2") == 4 and by_task.count("common_gen") == 3


def test_nothing_to_keep_is_refused():
    stage = _stage()
    stage.train_queries = [q for q in stage.train_queries if not q.options]
    with pytest.raises(SystemExit, match="no training query of a choice task"):
        load_script("subset_data").subset_stage(stage, 2, seed=0, choice_only=True)
