"""Score semantics, shards + manifest, resume after an interruption."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

import proxy_lm.scoring as scoring
from flan_data.schema import Query, join_context, write_jsonl
from flan_data.score_folder import SCORE_MANIFEST, ZERO_SHOT_FILE, ZERO_SHOT_ID, read_zero_shot
from proxy_lm import (
    continuation_losses,
    read_scores,
    score_candidates,
    score_record,
    score_zero_shot,
)

CHOICE = Query("q", "sst2", "sentiment", 3, "great film", options=["pos", "neg", "meh"], gold=1)
GENERATION = Query("g", "common_gen", "struct_to_text", 0, "words: a b", references=["a b."])


def test_score_record_choice():
    s = score_record(CHOICE, "p1", "lm-x", [2.0, 1.0, 3.0])
    probs = [math.exp(-x) for x in (2.0, 1.0, 3.0)]
    assert s.score == pytest.approx(probs[1] / sum(probs))
    assert s.correct is True
    assert (s.query_id, s.prompt_id, s.lm, s.template, s.option_losses) == (
        "q", "p1", "lm-x", 3, [2.0, 1.0, 3.0])
    assert score_record(CHOICE, "p1", "lm-x", [0.5, 1.0, 3.0]).correct is False
    assert score_record(CHOICE, "p", "m", [900.0, 1000.0, 950.0]).score == pytest.approx(0.0)


def test_score_record_generation():
    s = score_record(GENERATION, "p2", "lm-x", [1.25])
    assert s.score == -1.25
    assert s.correct is None
    with pytest.raises(ValueError, match="1 continuation"):
        score_record(GENERATION, "p2", "lm-x", [1.0, 2.0])


def test_scores_use_prompt_then_query_context(tiny_gpt_neo_path, scoring_data, tmp_path):
    from proxy_lm import load_lm

    lm = load_lm(str(tiny_gpt_neo_path), dtype="float32")
    queries, prompts, candidates = scoring_data
    scores = score_candidates(lm, queries, prompts, candidates, tmp_path / "s", shard_size=4,
                              progress=False)
    assert [(s.query_id, s.prompt_id) for s in scores] == [
        (c.query_id, p) for c in candidates for p in c.prompt_ids]
    first = scores[0]
    q, p = queries[first.query_id], prompts[first.prompt_id]
    [want] = continuation_losses(lm, [join_context([p.text], q.input)], [q.continuations()])
    assert first.option_losses == pytest.approx(want, abs=1e-5)
    assert first.lm == str(tiny_gpt_neo_path)
    assert {s.correct is None for s in scores if not queries[s.query_id].is_choice} == {True}
    zero = read_zero_shot(tmp_path / "s")  # every scored query, with the input alone
    assert sorted(zero) == sorted({c.query_id for c in candidates})
    [want] = continuation_losses(lm, [q.input], [q.continuations()])
    assert zero[q.id].option_losses == pytest.approx(want, abs=1e-5)
    assert zero[q.id] == score_record(q, ZERO_SHOT_ID, lm.name, zero[q.id].option_losses)


def test_zero_shot_scores_are_kept_cached_or_redone(tiny_lm, scoring_data, tmp_path,
                                                     monkeypatch):
    queries, _, candidates = scoring_data
    scored = {c.query_id: queries[c.query_id] for c in candidates}
    calls = []

    def counting(lm, contexts, *args, **kwargs):
        calls.append(len(contexts))
        return continuation_losses(lm, contexts, *args, **kwargs)

    monkeypatch.setattr(scoring, "continuation_losses", counting)
    cache = tmp_path / "cache"
    first = score_zero_shot(tiny_lm, scored, tmp_path / "a", score_cache=cache)
    assert calls == [len(scored)] and [z.query_id for z in first] == list(scored)
    assert score_zero_shot(tiny_lm, scored, tmp_path / "a", score_cache=cache) == first
    assert calls == [len(scored)]  # the file covers these queries: kept, nothing run
    assert score_zero_shot(tiny_lm, scored, tmp_path / "b", score_cache=cache) == first
    assert calls == [len(scored), 0]  # another folder: every loss from the score cache
    fewer = dict(list(scored.items())[:2])
    redone = score_zero_shot(tiny_lm, fewer, tmp_path / "a", score_cache=False)
    assert calls[-1] == 2  # other queries than the file's: scored again (batching may differ)
    assert [z.option_losses for z in redone] == [
        pytest.approx(z.option_losses, abs=1e-5) for z in first[:2]]
    assert sorted(read_zero_shot(tmp_path / "a")) == sorted(fewer)  # and rewritten
    (tmp_path / "a" / ZERO_SHOT_FILE).write_text("{not json\n")
    assert score_zero_shot(tiny_lm, fewer, tmp_path / "a", score_cache=cache) == first[:2]
    assert calls[-1] == 0  # a damaged file is redone, here from the cache
    write_jsonl(tmp_path / "a" / ZERO_SHOT_FILE,
                [dataclasses.replace(z, lm="another-lm") for z in first[:2]])
    assert score_zero_shot(tiny_lm, fewer, tmp_path / "a", score_cache=False) == redone
    assert calls[-1] == 2  # another LM's zero-shot scores are not kept


def test_interrupted_run_resumes_to_the_same_scores(tiny_lm, scoring_data, tmp_path, monkeypatch):
    queries, prompts, candidates = scoring_data  # 18 pairs -> shards of 5, 5, 5, 3
    full = score_candidates(tiny_lm, queries, prompts, candidates, tmp_path / "full",
                            shard_size=5, progress=False, score_cache=False)
    calls, crash_at = [], [2]

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) in crash_at:
            raise RuntimeError("simulated crash")
        return continuation_losses(*args, **kwargs)

    out = tmp_path / "resumed"
    monkeypatch.setattr(scoring, "continuation_losses", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        score_candidates(tiny_lm, queries, prompts, candidates, out, shard_size=5, progress=False,
                         score_cache=False)
    manifest = json.loads((out / SCORE_MANIFEST).read_text())
    assert manifest["complete"] is False
    assert [e["complete"] for e in manifest["shards"]] == [True, False, False, False]
    assert sorted(p.name for p in out.iterdir()) == [SCORE_MANIFEST, "shard-00000.jsonl"]
    with pytest.raises(ValueError, match="incomplete"):
        read_scores(out)

    calls.clear()
    crash_at.clear()
    resumed = score_candidates(tiny_lm, queries, prompts, candidates, out, shard_size=5,
                               progress=False, score_cache=False)
    assert len(calls) == 4  # 3 shards (the complete first one was skipped) + the zero-shot pass
    assert resumed == full
    assert read_scores(out) == read_scores(tmp_path / "full")  # shard (work) order
    assert sorted(read_scores(out), key=repr) == sorted(full, key=repr)

    (out / "shard-00002.jsonl").unlink()  # a lost shard is rescored
    calls.clear()
    assert score_candidates(tiny_lm, queries, prompts, candidates, out, shard_size=5,
                            progress=False, score_cache=False) == full
    assert len(calls) == 1  # the zero-shot file is complete: kept


def test_refuses_to_resume_a_different_run(tiny_gpt_neo_path, scoring_data, tmp_path):
    from proxy_lm import load_lm

    lm = load_lm(str(tiny_gpt_neo_path), dtype="float32")
    queries, prompts, candidates = scoring_data
    out = tmp_path / "s"
    score_candidates(lm, queries, prompts, candidates, out, shard_size=5, progress=False)
    lm.name = "another-lm"
    with pytest.raises(ValueError, match="cannot resume.*lm was"):
        score_candidates(lm, queries, prompts, candidates, out, shard_size=5, progress=False)
    lm.name = str(tiny_gpt_neo_path)
    with pytest.raises(ValueError, match="pairs_sha256"):
        score_candidates(lm, queries, prompts, candidates[::-1], out, shard_size=5,
                         progress=False)


def test_clear_errors(tiny_gpt_neo_path, scoring_data, tmp_path):
    from proxy_lm import load_lm

    lm = load_lm(str(tiny_gpt_neo_path), dtype="float32")
    queries, prompts, candidates = scoring_data
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        score_candidates(lm, queries, prompts, candidates, tmp_path / "busy", progress=False)
    with pytest.raises(KeyError, match="'p0'"):
        score_candidates(lm, queries, {}, candidates, tmp_path / "a", progress=False)
    with pytest.raises(FileNotFoundError, match=SCORE_MANIFEST):
        read_scores(tmp_path / "nothing")


def test_read_scores_checks_shard_lengths(tiny_lm, scoring_data, tmp_path):
    queries, prompts, candidates = scoring_data
    out = tmp_path / "s"
    score_candidates(tiny_lm, queries, prompts, candidates, out, shard_size=5, progress=False)
    shard = out / "shard-00001.jsonl"
    shard.write_text("".join(shard.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match="holds 4 scores but the manifest expects 5"):
        read_scores(out)
