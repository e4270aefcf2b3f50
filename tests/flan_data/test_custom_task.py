"""Bring-your-own-task files: the example under examples/, validation errors that name the
file, line and field, CSV rows, JSONL task files, and registration into the protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from flan_data import all_tasks, build_stage_data, get_task, tasks_in
from flan_data.custom_task import (
    TaskFileError,
    load_task_file,
    register_custom_task,
    unregister_custom_task,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "product_reviews.yaml"


def _write(folder: Path, task: str, rows: str, rows_name: str = "rows.jsonl") -> Path:
    (folder / rows_name).write_text(rows)
    path = folder / "task.yaml"
    path.write_text(task)
    return path


CHOICE = """name: mood
cluster: my_cluster
template: "Text: {text}\\nMood?"
options: [sad, happy]
label_field: label
data: rows.jsonl
"""


def test_the_example_file_loads():
    (task,) = load_task_file(EXAMPLE)
    assert (task.name, task.cluster, task.kind, task.metric) == (
        "product_reviews", "sentiment", "choice", "accuracy")
    assert len(task.rows) == 12 and {r["gold"] for r in task.rows} == {0, 1}


def test_unknown_key_is_reported_with_its_line(tmp_path):
    path = _write(tmp_path, CHOICE + "labels: [x]\n", '{"text": "a", "label": "sad"}\n')
    with pytest.raises(TaskFileError, match=rf"{path}:7: unknown field\(s\) \['labels'\]"):
        load_task_file(path)


def test_bad_row_names_data_file_line_and_field(tmp_path):
    rows = '{"text": "a", "label": "sad"}\n{"text": "b", "label": "angry"}\n'
    _write(tmp_path, CHOICE, rows)
    with pytest.raises(TaskFileError, match=r"rows.jsonl:2: field 'label' = 'angry' is neither"):
        load_task_file(tmp_path / "task.yaml")
    _write(tmp_path, CHOICE, '{"txt": "a", "label": "sad"}\n')
    with pytest.raises(TaskFileError, match=r"rows.jsonl:1: row lacks field 'text'"):
        load_task_file(tmp_path / "task.yaml")


def test_missing_and_conflicting_fields(tmp_path):
    path = _write(tmp_path, CHOICE.replace("data: rows.jsonl\n", ""), "")
    with pytest.raises(TaskFileError, match="missing required field 'data'"):
        load_task_file(path)
    path = _write(tmp_path, CHOICE + "target_field: text\n", '{"text": "a", "label": 0}\n')
    with pytest.raises(TaskFileError, match="either 'options'"):
        load_task_file(path)
    path = _write(tmp_path, CHOICE.replace("cluster: my_cluster", "cluster: My Cluster"), "")
    with pytest.raises(TaskFileError, match=rf"{path}:2: field 'cluster'"):
        load_task_file(path)
    path = _write(tmp_path, CHOICE + "metric: rouge_l\n", '{"text": "a", "label": 0}\n')
    with pytest.raises(TaskFileError, match=rf"{path}:7: metric 'rouge_l' is not valid"):
        load_task_file(path)


def test_generation_task_from_csv_in_a_jsonl_task_file(tmp_path):
    (tmp_path / "rows.csv").write_text("title,body\nHello,Say hello\nBye,Say bye\n")
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"name": "titles", "cluster": "summarization", "template": "{body}", '
                    '"target_field": "title", "data": "rows.csv"}\n')
    (task,) = load_task_file(path)
    assert (task.kind, task.metric) == ("generation", "rouge_l")
    assert task.rows[1] == {"fields": {"body": "Say bye"}, "gold": None, "references": ["Bye"]}


@pytest.fixture
def registered():
    yield
    unregister_custom_task("mood")
    assert "my_cluster" not in {t.cluster for t in all_tasks()}


def test_registered_task_joins_the_protocol_as_held_out(tmp_path, shared_data_dir, registered):
    rows = "".join(f'{{"text": "t{i}", "label": {i % 2}}}\n' for i in range(6))
    (task,) = load_task_file(_write(tmp_path, CHOICE, rows))
    registered = register_custom_task(task, tmp_path / "custom")
    assert get_task("mood") is registered and register_custom_task(task, tmp_path) is registered
    assert [t.name for t in tasks_in("my_cluster")] == ["mood"]
    stage = build_stage_data("my_cluster", shared_data_dir, ["paraphrase"], pool_per_task=5,
                             queries_per_task=2, n_candidates=2, eval_per_task=4)
    assert [q.task for q in stage.eval_queries] == ["mood"] * 4
    assert stage.eval_queries[0].input.startswith("Text: t")
    assert not {p.task for p in stage.pool} & {"mood"}
    with pytest.raises(TaskFileError, match="built-in task"):
        register_custom_task(load_task_file(_write(
            tmp_path, CHOICE.replace("name: mood", "name: sst2"), rows))[0], tmp_path)
