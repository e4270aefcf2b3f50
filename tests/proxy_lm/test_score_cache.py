"""The persistent score cache: a second run of the same pairs, in a new folder and a new cache
object, runs no forward pass and gives the same scores; changed content is recomputed."""

from __future__ import annotations

import dataclasses

from proxy_lm import load_lm, score_candidates
from proxy_lm.score_cache import ScoreCache, pair_key


def _count_forwards(lm) -> list[int]:
    calls: list[int] = []
    lm.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


def test_second_run_computes_nothing(tiny_lm_path, scoring_data, tmp_path, private_score_cache):
    queries, prompts, candidates = scoring_data
    first_lm = load_lm(str(tiny_lm_path), dtype="float32")
    first_calls = _count_forwards(first_lm)
    first = score_candidates(first_lm, queries, prompts, candidates, tmp_path / "a",
                             shard_size=4, progress=False)
    assert first_calls
    segments = list(private_score_cache.glob("*/seg-*.jsonl"))
    assert segments and not list(private_score_cache.glob("*/.*.tmp"))

    lm = load_lm(str(tiny_lm_path), dtype="float32")  # a new process would do the same
    calls = _count_forwards(lm)
    again = score_candidates(lm, queries, prompts, candidates, tmp_path / "b", shard_size=7,
                             progress=False)
    assert calls == []
    assert again == first

    changed = dict(queries)
    q = changed["c1"]
    changed["c1"] = dataclasses.replace(q, options=[*q.options, "a third option"])
    score_candidates(lm, changed, prompts, candidates, tmp_path / "c", progress=False)
    assert calls  # the pairs of c1 (new options) were computed, the rest came from the cache


def test_namespace_follows_the_lm_identity(tiny_gpt_neo_path, tiny_llama_path, tmp_path):
    neo = load_lm(str(tiny_gpt_neo_path), dtype="float32")
    same = ScoreCache.for_lm(load_lm(str(tiny_gpt_neo_path), dtype="float32"), tmp_path)
    assert ScoreCache.for_lm(neo, tmp_path).folder == same.folder
    assert ScoreCache.for_lm(load_lm(str(tiny_gpt_neo_path), dtype="bfloat16"),
                             tmp_path).folder != same.folder
    assert ScoreCache.for_lm(load_lm(str(tiny_llama_path), dtype="float32"),
                             tmp_path).folder != same.folder
    with __import__("torch").no_grad():
        next(neo.model.parameters()).view(-1)[0] += 1.0  # new weights behind the same path
    assert ScoreCache.for_lm(neo, tmp_path).folder != same.folder


def test_put_get_persist(tmp_path):
    key = pair_key(0, "a prompt\n\nan input", ["yes", "no"])
    assert key != pair_key(1, "a prompt\n\nan input", ["yes", "no"])
    assert key != pair_key(0, "a prompt\n\nan input", ["no", "yes"])
    cache = ScoreCache(tmp_path)
    assert cache.get([key]) == {}
    cache.put({key: [1.5, 2.5]})
    assert ScoreCache(tmp_path).get([key, "other"]) == {key: [1.5, 2.5]}
