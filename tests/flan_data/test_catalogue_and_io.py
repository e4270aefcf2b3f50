"""Catalogue coverage of the mirror, record files, metrics, and loader errors."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from flan_data import (
    Query,
    SchemaError,
    Score,
    UnknownNameError,
    all_tasks,
    example_metric,
    get_task,
    load_rows,
    prepare_output_dir,
    read_jsonl,
    write_jsonl,
)
from flan_data.examples import convert_rows
from flan_data.loading import MissingSplitError
from flan_data.schema import refuse_nonempty_dir


def test_catalogue_covers_every_dataset_of_the_mirror(shared_data_dir):
    manifest = json.loads((shared_data_dir / "MANIFEST.json").read_text())
    mirrored = {d["name"] for d in manifest["datasets"]}
    assert {t.mirror_name for t in all_tasks()} == mirrored


@pytest.mark.parametrize("task", all_tasks(), ids=lambda t: t.name)
def test_every_task_renders_every_template(shared_data_dir, task):
    rows = load_rows(task, task.eval_split, shared_data_dir)[:20]
    examples = convert_rows(task, task.eval_split, rows, seed=0)
    assert examples, f"{task.name}: no usable rows"
    ex = examples[0].example
    for t in range(len(task.templates)):
        text = task.render(ex, t)
        assert text and "{" not in text.replace("{}", "")
    if task.kind == "choice":
        assert all(0 <= e.example.gold < len(e.example.options) for e in examples)
    else:
        assert all(e.example.references for e in examples)


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="known tasks: .*sst2"):
        get_task("sst-2")


def test_missing_split_names_the_file_and_the_splits_there(shared_data_dir):
    with pytest.raises(MissingSplitError, match=r"piqa.*train.*\['validation'\]"):
        load_rows(get_task("piqa"), "train", shared_data_dir)


def test_malformed_data_file_names_the_file(tmp_path):
    folder = tmp_path / "glue-sst2"
    folder.mkdir()
    with gzip.open(folder / "validation.jsonl.gz", "wt") as fh:
        fh.write('{"sentence": "ok", "label": 1}\n{not json\n')
    with pytest.raises(ValueError, match="validation.jsonl.gz"):
        load_rows(get_task("sst2"), "validation", tmp_path)


def test_record_files_round_trip_and_errors_name_file_and_line(tmp_path):
    q = Query("t:train:0", "t", "c", 1, "Is it good?", ["no", "yes"], 1)
    path = write_jsonl(tmp_path / "q.jsonl", [q])
    assert read_jsonl(path, Query) == [q]
    path.write_text(path.read_text() + '{"id": "x"}\n')
    with pytest.raises(SchemaError, match=r"q.jsonl:2: Query record lacks field\(s\)"):
        read_jsonl(path, Query)
    extra = write_jsonl(tmp_path / "extra.jsonl", [{**q.__dict__, "passage": "?"}])
    with pytest.raises(SchemaError, match=r"extra.jsonl:1: unknown field\(s\) \['passage'\]"):
        read_jsonl(extra, Query)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text("{oops\n")
    with pytest.raises(SchemaError, match="bad.jsonl:1: not valid JSON"):
        read_jsonl(bad_json, Score)


def test_output_dir_is_not_overwritten_unless_asked(tmp_path):
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_output_dir(tmp_path)
    assert prepare_output_dir(tmp_path, overwrite=True) == tmp_path
    assert (tmp_path / "x").read_text() == "keep me"


def test_refuse_nonempty_dir_names_the_path_and_the_fix(tmp_path):
    (tmp_path / ".lock").write_text("")
    assert refuse_nonempty_dir(tmp_path, "--out", "fix it.", ignore=(".lock",)) == tmp_path
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(FileExistsError, match=re.escape(f"--out {tmp_path} is not empty; fix it.")):
        refuse_nonempty_dir(tmp_path, "--out", "fix it.", ignore=(".lock",))
    assert refuse_nonempty_dir(tmp_path, "", "fix it.", overwrite=True) == tmp_path
    with pytest.raises(FileExistsError, match=r"x exists and is not a directory"):
        refuse_nonempty_dir(tmp_path / "x", "", "fix it.", overwrite=True)
    assert refuse_nonempty_dir(tmp_path / "new", "", "fix it.") == tmp_path / "new"


def test_metrics_on_hand_cases():
    choice = Query("a", "t", "c", 0, "x", ["no", "yes"], 1)
    gen = Query("b", "t", "c", 0, "x", references=["The Eiffel Tower", "Eiffel"])
    assert example_metric("accuracy", choice, 1) == 1.0
    assert example_metric("accuracy", choice, 0) == 0.0
    assert example_metric("exact_match", gen, "eiffel tower!") == 1.0
    assert example_metric("exact_match", gen, "Paris") == 0.0
    assert example_metric("rouge_l", gen, "the eiffel tower") == pytest.approx(1.0)
    assert 0 < example_metric("rouge_l", gen, "tower of pisa") < 1


def test_registering_a_task_first_keeps_the_built_in_ones(monkeypatch):
    """`register` before any lookup used to hide every built-in task (the registry was loaded
    only while empty)."""
    from flan_data import catalogue

    monkeypatch.setattr(catalogue, "_REGISTRY", {})  # a fresh process's state
    monkeypatch.setattr(catalogue, "_BUILTINS", {"loaded": False})
    mine = catalogue.Task(name="my_reviews", cluster="sentiment", hf_path="local",
                          hf_config=None, mirror_name="my_reviews", eval_split="test",
                          kind="choice", metric="accuracy", convert=lambda row: None,
                          templates=("{text}",))
    catalogue.register(mine)
    assert catalogue.get_task("sst2").cluster == "sentiment"
    assert catalogue.get_task("my_reviews") is mine
    with pytest.raises(ValueError, match="registered twice"):
        catalogue.register(mine)
