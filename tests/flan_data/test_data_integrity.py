"""Data integrity checks: mirror files against MANIFEST.json sha256 sums (and a `datasets` cache
keyed on content), stage files against the counts in data_manifest.json, and record field types
against the dataclass annotations."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest

import flan_data.loading as loading
import flan_data.stage_io as stage_io
from flan_data import (
    Candidates,
    Prompt,
    Query,
    SchemaError,
    Score,
    StageData,
    get_task,
    load_rows,
    read_jsonl,
    read_stage_data,
    write_jsonl,
    write_stage_data,
)

SST2 = get_task("sst2")


# -- 1. mirror files: sha256 against MANIFEST.json, datasets cache keyed on content ----------


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    """A one-file mirror (glue-sst2/train) with its MANIFEST.json, and a private datasets cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    _new_process()
    root = tmp_path / "mirror"
    _write_rows(root, [{"sentence": "old good", "label": 1}, {"sentence": "old bad", "label": 0}])
    _write_manifest(root)
    yield root
    _new_process()


def _split_file(root: Path) -> Path:
    return root / SST2.mirror_name / f"{SST2.train_split}.jsonl.gz"


def _write_rows(root: Path, rows: list[dict]) -> None:
    path = _split_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode(), mtime=0))


def _write_manifest(root: Path) -> str:
    digest = hashlib.sha256(_split_file(root).read_bytes()).hexdigest()
    manifest = {"datasets": [{"name": SST2.mirror_name,
                              "splits": {SST2.train_split: {"rows": 2, "sha256": digest}}}]}
    (root / "MANIFEST.json").write_text(json.dumps(manifest))
    return digest


def _change_keeping_mtime(root: Path, rows: list[dict]) -> None:
    st = _split_file(root).stat()
    _write_rows(root, rows)
    os.utime(_split_file(root), ns=(st.st_atime_ns, st.st_mtime_ns))


def _new_process() -> None:
    """Forgets what this process has cached, as a fresh `uprise` run would."""
    for value in vars(loading).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


NEW_ROWS = [{"sentence": "new fine", "label": 1}, {"sentence": "new awful", "label": 0}]


def test_changed_mirror_file_with_kept_mtime_is_refused(mirror):
    assert load_rows(SST2, SST2.train_split, mirror)[0]["sentence"] == "old good"
    recorded = json.loads((mirror / "MANIFEST.json").read_text())
    recorded = recorded["datasets"][0]["splits"][SST2.train_split]["sha256"]
    _change_keeping_mtime(mirror, NEW_ROWS)
    actual = hashlib.sha256(_split_file(mirror).read_bytes()).hexdigest()
    _new_process()
    with pytest.raises(ValueError) as info:
        load_rows(SST2, SST2.train_split, mirror)
    message = str(info.value)
    assert "\n" not in message and str(_split_file(mirror)) in message
    assert actual in message and recorded in message
    assert "Restore" in message and "MANIFEST.json" in message


def test_updated_mirror_file_with_kept_mtime_serves_the_new_rows(mirror):
    assert load_rows(SST2, SST2.train_split, mirror)[0]["sentence"] == "old good"
    _change_keeping_mtime(mirror, NEW_ROWS)
    _write_manifest(mirror)  # an intended update: MANIFEST.json records the new sum
    _new_process()
    assert [r["sentence"] for r in load_rows(SST2, SST2.train_split, mirror)] == [
        "new fine", "new awful"]


def test_mirror_file_is_hashed_once_per_process(mirror, monkeypatch):
    calls: list[str] = []
    real = loading.sha256_file
    monkeypatch.setattr(loading, "sha256_file", lambda p: calls.append(str(p)) or real(p))
    first = load_rows(SST2, SST2.train_split, mirror)
    assert load_rows(SST2, SST2.train_split, mirror) == first
    assert calls == [str(_split_file(mirror))]
    _write_rows(mirror, NEW_ROWS)  # a new mtime: hashed again, and refused
    with pytest.raises(ValueError, match="sha256 is"):
        load_rows(SST2, SST2.train_split, mirror)
    assert len(calls) == 2


def test_a_mirror_without_manifest_still_loads(mirror):
    (mirror / "MANIFEST.json").unlink()
    assert len(load_rows(SST2, SST2.train_split, mirror)) == 2


# -- 2. stage files against the counts in data_manifest.json --------------------------------


def _stage() -> StageData:
    pool = [Prompt(f"a:train:{i}", "a", "c", 0, f"prompt {i}") for i in range(4)]
    queries = [Query(f"a:train:{i}", "a", "c", 0, f"query {i}", ["no", "yes"], i % 2)
               for i in range(4, 7)]
    candidates = [Candidates(q.id, [p.id for p in pool[:2]]) for q in queries]
    evals = [Query("b:validation:0", "b", "d", 0, "eval 0", references=["x"])]
    counts = {"pool": len(pool), "train_queries": len(queries), "eval_queries": len(evals)}
    return StageData(pool, queries, evals, candidates, {"counts": counts})


def _drop_last_line(path: Path) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


@pytest.mark.parametrize("name, have, want", [
    (stage_io.TRAIN_QUERIES, 2, 3), (stage_io.POOL, 3, 4), (stage_io.EVAL_QUERIES, 0, 1),
    (stage_io.CANDIDATES, 2, 3),
])
def test_a_stage_file_that_lost_a_record_is_refused(tmp_path, name, have, want):
    folder = write_stage_data(_stage(), tmp_path / "data")
    assert read_stage_data(folder).manifest["counts"]["train_queries"] == 3
    _drop_last_line(folder / name)
    with pytest.raises(ValueError) as info:
        read_stage_data(folder)
    message = str(info.value)
    assert "\n" not in message and str(folder / name) in message
    assert f"holds {have} records" in message and f"counts {want}" in message
    assert "uprise data" in message


def test_a_stage_file_read_alone_is_count_checked(tmp_path):
    folder = write_stage_data(_stage(), tmp_path / "data")
    assert len(stage_io.read_stage_file(folder / stage_io.TRAIN_QUERIES, Query)) == 3
    _drop_last_line(folder / stage_io.TRAIN_QUERIES)
    with pytest.raises(ValueError, match=r"train_queries.jsonl: holds 2 records .*counts 3"):
        stage_io.read_stage_file(folder / stage_io.TRAIN_QUERIES, Query)
    loose = write_jsonl(tmp_path / "loose" / stage_io.TRAIN_QUERIES, _stage().train_queries[:1])
    assert len(stage_io.read_stage_file(loose, Query)) == 1  # no manifest beside it: no check


def test_retriever_training_refuses_a_stage_file_that_lost_a_query(tmp_path):
    pytest.importorskip("lightning")
    from retriever.data import RetrieverDataModule

    folder = write_stage_data(_stage(), tmp_path / "data")
    scores = write_jsonl(tmp_path / "scores.jsonl", [
        Score("a:train:4", "a:train:0", "lm", 0, [0.1, 0.9], 0.9, True)])
    _drop_last_line(folder / stage_io.TRAIN_QUERIES)
    data = RetrieverDataModule(scores, folder / stage_io.TRAIN_QUERIES, folder / stage_io.POOL)
    with pytest.raises(ValueError, match=r"train_queries.jsonl: holds 2 records .*uprise data"):
        data.setup()


# -- 3. record field types against the dataclass annotations --------------------------------

QUERY = {"id": "a:train:0", "task": "a", "cluster": "c", "template": 0, "input": "Good?",
         "options": ["no", "yes"], "gold": 1}
SCORE = {"query_id": "q", "prompt_id": "p", "lm": "lm", "template": 0,
         "option_losses": [0.5, 1.5], "score": 0.7, "correct": True}


@pytest.mark.parametrize("cls, row, field, expected", [
    (Query, {**QUERY, "gold": "1"}, "gold", "int or null"),
    (Query, {**QUERY, "options": "negative"}, "options", "a list of str or null"),
    (Query, {**QUERY, "options": ["no", 1]}, "options", "a list of str or null"),
    (Query, {**QUERY, "template": True}, "template", "int"),
    (Query, {**QUERY, "input": None}, "input", "str"),
    (Query, {**QUERY, "options": None, "gold": None, "references": "x"}, "references",
     "a list of str"),
    (Prompt, {"id": "p", "task": "a", "cluster": "c", "template": 1.0, "text": "t"}, "template",
     "int"),
    (Candidates, {"query_id": "q", "prompt_ids": ["p", None]}, "prompt_ids", "a list of str"),
    (Score, {**SCORE, "score": "0.7"}, "score", "float"),
    (Score, {**SCORE, "option_losses": [0.5, "x"]}, "option_losses", "a list of float"),
    (Score, {**SCORE, "correct": "yes"}, "correct", "bool or null"),
])
def test_a_field_of_the_wrong_type_names_file_line_field_value_and_type(
        tmp_path, cls, row, field, expected):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(SchemaError) as info:
        read_jsonl(path, cls)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:1: field {field!r} = {row[field]!r}")
    assert f"a {cls.__name__} needs {expected}." in message


@pytest.mark.parametrize("cls, row", [
    (Query, QUERY),
    (Query, {**QUERY, "options": None, "gold": None, "references": ["a", "b"]}),
    (Score, {**SCORE, "option_losses": [1, 2.5], "score": 1, "correct": None}),  # ints as floats
    (Candidates, {"query_id": "q", "prompt_ids": []}),
])
def test_well_typed_records_decode(tmp_path, cls, row):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert read_jsonl(path, cls) == [cls(**row)]
