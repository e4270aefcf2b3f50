"""The score folder's one reader: JSONL files and folders, legacy manifests and their migration,
and the refusals (incomplete scoring, shard counts, hand-made manifests it cannot read)."""

from __future__ import annotations

import pytest

import proxy_lm
import retriever
from flan_data.schema import SchemaError, Score, write_json, write_jsonl
from flan_data.score_folder import (
    LEGACY_MANIFEST,
    LOCK_FILE,
    SCORE_MANIFEST,
    ZERO_SHOT_FILE,
    ZERO_SHOT_ID,
    is_complete,
    read_manifest,
    read_scores,
    read_zero_shot,
    shard_name,
    write_manifest,
)
from proxy_lm.shards import fresh_manifest, open_manifest, work_order

PAIRS = [("q1", "a"), ("q2", "b"), ("q3", "a")]  # work order: (q1, a), (q3, a), (q2, b)


def s(q: str, p: str) -> Score:
    return Score(query_id=q, prompt_id=p, lm="lm", template=0, option_losses=[0.5], score=-0.5,
                 correct=None)


def score_folder(folder, manifest_name=SCORE_MANIFEST, shards=(0, 1)) -> list[Score]:
    """A folder as `uprise score` leaves it (shard size 2), with the given shards written and the
    manifest under `manifest_name`; returns the written scores in work order."""
    manifest = fresh_manifest("lm", PAIRS, 2)
    work = work_order(PAIRS)
    scores = []
    for i in shards:
        chunk = [s(q, p) for q, p in work[2 * i : 2 * i + 2]]
        write_jsonl(folder / shard_name(i), chunk)
        manifest["shards"][i]["complete"] = True
        scores += chunk
    manifest["complete"] = all(e["complete"] for e in manifest["shards"])
    write_json(folder / manifest_name, manifest)
    return scores


def test_proxy_lm_and_retriever_export_the_one_reader():
    assert proxy_lm.read_scores is read_scores and retriever.read_scores is read_scores


def test_a_legacy_folder_is_read_and_migrated_when_resumed(tmp_path):
    scores = score_folder(tmp_path, LEGACY_MANIFEST)
    assert read_scores(tmp_path) == scores and is_complete(tmp_path)
    assert read_manifest(tmp_path)["n_pairs"] == 3
    manifest = open_manifest(tmp_path, "lm", PAIRS, 2)  # a resumed `uprise score`
    assert manifest["complete"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == [SCORE_MANIFEST, *map(shard_name, (0, 1))]
    assert read_scores(tmp_path) == scores


def test_a_partial_legacy_folder_resumes_under_the_new_name(tmp_path):
    score_folder(tmp_path, LEGACY_MANIFEST, shards=(0,))
    assert not is_complete(tmp_path)
    with pytest.raises(ValueError, match="incomplete.*rerun the same `uprise score`"):
        read_scores(tmp_path)
    manifest = open_manifest(tmp_path, "lm", PAIRS, 2)
    assert [e["complete"] for e in manifest["shards"]] == [True, False]
    assert not (tmp_path / LEGACY_MANIFEST).exists()
    assert read_manifest(tmp_path) == manifest


def test_write_manifest_replaces_a_legacy_one(tmp_path):
    write_json(tmp_path / LEGACY_MANIFEST, {"complete": False})
    write_manifest(tmp_path, {"complete": True})
    assert not (tmp_path / LEGACY_MANIFEST).exists() and is_complete(tmp_path)


def test_read_scores_reads_a_jsonl_file(tmp_path):
    rows = [s("q1", "a"), s("q2", "b")]
    write_jsonl(tmp_path / "scores.jsonl", rows)
    assert read_scores(tmp_path / "scores.jsonl") == rows
    with pytest.raises(FileNotFoundError, match="does not exist; expected a JSONL file"):
        read_scores(tmp_path / "missing.jsonl")


def test_read_scores_checks_each_shard_and_the_total(tmp_path):
    score_folder(tmp_path)
    shard = tmp_path / shard_name(0)
    shard.write_text(shard.read_text().splitlines(keepends=True)[0])
    with pytest.raises(ValueError, match="holds 1 scores but the manifest expects 2; delete that"):
        read_scores(tmp_path)
    write_json(tmp_path / SCORE_MANIFEST, {"complete": True, "n_pairs": 3})  # no per-shard n
    with pytest.raises(ValueError, match="2 scores for 3 pairs"):
        read_scores(tmp_path)


def test_read_scores_refuses_an_incomplete_folder(tmp_path):
    score_folder(tmp_path, shards=(0,))
    with pytest.raises(ValueError, match=r"1 of 2 shards missing.*resume"):
        read_scores(tmp_path)
    write_json(tmp_path / SCORE_MANIFEST, {"complete": False, "shards": [shard_name(0)]})
    with pytest.raises(ValueError, match="incomplete"):
        read_scores(tmp_path)


def test_hand_made_manifests(tmp_path):
    write_jsonl(tmp_path / shard_name(1), [s("q2", "b")])
    write_jsonl(tmp_path / shard_name(0), [s("q1", "a")])
    with pytest.raises(FileNotFoundError, match=f"{SCORE_MANIFEST} not found.*`uprise score`"):
        read_scores(tmp_path)
    write_json(tmp_path / LEGACY_MANIFEST, {"complete": True})  # no shard list: every shard file
    assert [x.query_id for x in read_scores(tmp_path)] == ["q1", "q2"]
    for entry in (shard_name(1), {"path": f"elsewhere/{shard_name(1)}"}, {"name": shard_name(1)},
                  {"shard": shard_name(1), "complete": True}):
        write_json(tmp_path / LEGACY_MANIFEST, {"shards": [entry]})
        assert [x.query_id for x in read_scores(tmp_path)] == ["q2"]
    write_json(tmp_path / LEGACY_MANIFEST, {"shards": [{"file": shard_name(1), "complete": False}]})
    with pytest.raises(ValueError, match="incomplete"):
        read_scores(tmp_path)
    write_json(tmp_path / LEGACY_MANIFEST, {"shards": [{"n": 1}]})
    with pytest.raises(SchemaError, match="unrecognised shard entry"):
        read_scores(tmp_path)
    write_json(tmp_path / LEGACY_MANIFEST, {"shards": []})
    with pytest.raises(SchemaError, match="no score shards found"):
        read_scores(tmp_path)


def test_read_manifest_errors_name_the_file(tmp_path):
    assert read_manifest(tmp_path, required=False) is None and not is_complete(tmp_path)
    (tmp_path / SCORE_MANIFEST).write_text("{oops")
    with pytest.raises(SchemaError, match=f"{SCORE_MANIFEST}:1: not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / SCORE_MANIFEST).write_text("[]")
    with pytest.raises(SchemaError, match="expected a JSON object"):
        read_manifest(tmp_path)


def test_open_manifest_refuses_a_non_empty_folder_but_ignores_its_lock(tmp_path):
    (tmp_path / LOCK_FILE).write_text("")
    assert open_manifest(tmp_path, "lm", PAIRS, 2)["n_pairs"] == 3
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match=f"other is not empty; it has no {SCORE_MANIFEST}"):
        open_manifest(other, "lm", PAIRS, 2)


def test_read_zero_shot_names_the_file_line_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{ZERO_SHOT_FILE} not found.*`uprise score`"):
        read_zero_shot(tmp_path)
    write_jsonl(tmp_path / ZERO_SHOT_FILE, [s("q1", ZERO_SHOT_ID), s("q2", ZERO_SHOT_ID)])
    assert list(read_zero_shot(tmp_path, ["q2"])) == ["q1", "q2"]
    with pytest.raises(KeyError, match="no zero-shot score for query 'q3'"):
        read_zero_shot(tmp_path, ["q1", "q3"])
    write_jsonl(tmp_path / ZERO_SHOT_FILE, [s("q1", ZERO_SHOT_ID), s("q1", ZERO_SHOT_ID)])
    with pytest.raises(SchemaError, match=f"{ZERO_SHOT_FILE}:2: .*'q1' repeats its query"):
        read_zero_shot(tmp_path)
    write_jsonl(tmp_path / ZERO_SHOT_FILE, [s("q1", ZERO_SHOT_ID), s("q2", "a")])
    with pytest.raises(SchemaError, match=f"{ZERO_SHOT_FILE}:2: .*has prompt_id 'a'"):
        read_zero_shot(tmp_path)


def test_the_zero_shot_file_is_not_a_shard(tmp_path):
    written = score_folder(tmp_path)
    write_jsonl(tmp_path / ZERO_SHOT_FILE, [s(q, ZERO_SHOT_ID) for q in ("q1", "q2", "q3")])
    assert read_scores(tmp_path) == written
    write_json(tmp_path / SCORE_MANIFEST, {"complete": True})  # hand-made: every shard file
    assert read_scores(tmp_path) == written
