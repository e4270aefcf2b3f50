"""Iterative mining: top-k same-task candidates plus seeded random ones (from a retriever or
BM25), round bookkeeping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flan_data import StageData, read_stage_data, write_stage_data
from flan_data.schema import Prompt, Query
from retriever.mining import bm25_candidates, mine_round, mined_candidates


def _pool():
    return [Prompt(id=f"a{i}", task="a", cluster="c1", template=0, text=f"a prompt {i}")
            for i in range(6)] + [Prompt(id="b0", task="b", cluster="c2", template=0,
                                         text="b prompt")]


def _query(qid, task="a"):
    return Query(id=qid, task=task, cluster="c1", template=0, input=f"query {qid}",
                 options=["yes", "no"], gold=0)


def test_top_k_of_the_same_task_then_random_others_never_the_query():
    pool = _pool()
    p_emb = np.array([[i, 0.0] for i in range(6)] + [[100.0, 0.0]])  # b0 scores highest
    q_emb = np.array([[1.0, 0.0]])
    got = mined_candidates(q_emb, p_emb, [_query("a5")], pool, top_k=2, n_random=2, seed=0)
    ids = got[0].prompt_ids
    assert ids[:2] == ["a4", "a3"]  # a5 is the query itself; b0 is another task
    assert len(ids) == 4 and set(ids[2:]) <= {"a0", "a1", "a2"} and len(set(ids)) == 4
    again = mined_candidates(q_emb, p_emb, [_query("a5")], pool, top_k=2, n_random=2, seed=0)
    assert again == got
    few = mined_candidates(q_emb, p_emb, [_query("a5")], pool, top_k=2, n_random=9, seed=0)
    assert len(few[0].prompt_ids) == 5  # every other same-task prompt, no more


def test_two_rounds_keep_the_data_and_count_rounds(tmp_path, tiny_config):
    from retriever import BiEncoder, export_retriever

    pool = _pool()
    queries = [_query("a0"), _query("a1"), _query("q", task="b")]
    stage = StageData(pool, queries, [], [], {"held_out_cluster": "summarization", "seed": 1})
    write_stage_data(stage, tmp_path / "r0")
    export = export_retriever(BiEncoder(tiny_config), tmp_path / "exp", {})
    first = mine_round(tmp_path / "r0", export, tmp_path / "r1", top_k=2, n_random=1)
    second = mine_round(first, export, tmp_path / "r2", top_k=1, n_random=0)
    r1, r2 = read_stage_data(first), read_stage_data(second)
    assert r1.pool == pool and r1.train_queries == queries and r2.pool == pool
    assert [len(c.prompt_ids) for c in r1.candidates] == [3, 3, 1]  # task b has one prompt
    assert r1.manifest["mining"]["round"] == 1 and r2.manifest["mining"]["round"] == 2
    assert r2.manifest["mining"]["source"] == str(first) and r2.manifest["n_candidates"] == 1
    assert r2.manifest["held_out_cluster"] == "summarization" and r2.manifest["seed"] == 1
    top1 = [c.prompt_ids[0] for c in r2.candidates[:2]]
    assert top1 == [c.prompt_ids[0] for c in r1.candidates[:2]]  # same retriever, same best
    with pytest.raises(FileExistsError, match="not empty"):
        mine_round(tmp_path / "r0", export, tmp_path / "r1")
    assert json.loads((tmp_path / "r1" / "data_manifest.json").read_text())["mining"]


def test_bm25_candidates_rank_the_query_task_lexically_never_the_query():
    pool = [Prompt(id=f"a{i}", task="a", cluster="c1", template=0, text=t) for i, t in
            enumerate(["red apple pie", "green apple", "blue sky", "apple red apple pie", "rain"])]
    pool.append(Prompt(id="b0", task="b", cluster="c2", template=0, text="red apple pie apple"))
    query = Query(id="a0", task="a", cluster="c1", template=0, input="red apple pie",
                  options=["x"], gold=0)
    got = bm25_candidates([query], pool, top_k=2, n_random=1, seed=0)[0].prompt_ids
    # a0 is the query itself, b0 another task; a3 shares red+apple+pie, a1 only apple
    assert got[:2] == ["a3", "a1"] and got[2] in {"a2", "a4"}
    assert bm25_candidates([query], pool, top_k=2, n_random=1, seed=0)[0].prompt_ids == got
    other = Query(id="q", task="b", cluster="c2", template=0, input="apple", options=["x"], gold=0)
    both = bm25_candidates([other, query], pool, top_k=2, n_random=1, seed=0)
    assert both[0].prompt_ids == ["b0"] and both[1].prompt_ids == got  # one index per task


def test_uprise_mine_bm25_writes_a_round_ranked_by_bm25(tmp_path):
    from retriever.cli import mine_main

    pool = [Prompt(id=f"a{i}", task="a", cluster="c1", template=0, text=f"word{i} shared")
            for i in range(5)]
    query = Query(id="x", task="a", cluster="c1", template=0, input="word3", options=["y"],
                  gold=0)
    dev = Query(id="d", task="a", cluster="c1", template=0, input="word9", options=["y"], gold=0)
    write_stage_data(StageData(pool, [query], [], [], {"seed": 1, "counts": {"dev_queries": 1}},
                               [dev]), tmp_path / "r0")
    mine_main(["--data", str(tmp_path / "r0"), "--bm25", "--top-k", "1", "--n-random", "2",
               "--output-dir", str(tmp_path / "r1")])
    mined = read_stage_data(tmp_path / "r1")
    assert mined.candidates[0].prompt_ids[0] == "a3" and len(mined.candidates[0].prompt_ids) == 3
    assert mined.dev_queries == [dev]  # the development queries travel with the round
    assert mined.manifest["mining"]["ranker"] == "bm25"
    assert mined.manifest["mining"]["retriever"] is None
    with pytest.raises(SystemExit):  # a ranker is required, and only one
        mine_main(["--data", str(tmp_path / "r0"), "--output-dir", str(tmp_path / "r2")])
