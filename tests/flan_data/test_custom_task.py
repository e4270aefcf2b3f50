"""Bring-your-own-task files: the example under examples/, validation errors that name the
file, line and field, CSV rows, JSONL task files, registration into the protocol, per-row
options (options_field, with the README's example) and where `data:` may point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from flan_data import all_tasks, build_stage_data, get_task, load_rows, tasks_in
from flan_data.custom_task import (
    TaskFileError,
    load_task_file,
    register_custom_task,
    unregister_custom_task,
)
from flan_data.examples import convert_rows

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "product_reviews.yaml"
README = REPO / "README.md"


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
    assert (task.kind, task.metric, task.max_new_tokens) == ("generation", "rouge_l", 32)
    assert task.rows[1] == {"fields": {"body": "Say bye"}, "gold": None, "references": ["Bye"]}


def test_generation_budget_from_the_task_file(tmp_path):
    from flan_data import answer_budget

    task = 'name: long_titles\ncluster: my_cluster\ntemplate: "{body}"\ntarget_field: title\n'
    (task_obj,) = load_task_file(_write(tmp_path, task + "max_new_tokens: 96\ndata: rows.jsonl\n",
                                        '{"body": "Say hello", "title": "Hello"}\n'))
    register_custom_task(task_obj, tmp_path / "registered")
    try:
        assert answer_budget("long_titles") == 96
    finally:
        unregister_custom_task("long_titles")
    path = _write(tmp_path, task + "max_new_tokens: 0\ndata: rows.jsonl\n", "")
    with pytest.raises(TaskFileError, match=rf"{path}:5: field 'max_new_tokens' must be"):
        load_task_file(path)
    path = _write(tmp_path, CHOICE + "max_new_tokens: 8\n", '{"text": "a", "label": 0}\n')
    with pytest.raises(TaskFileError, match=rf"{path}:7: field 'max_new_tokens' applies to"):
        load_task_file(path)


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


# --- per-row options (options_field) -------------------------------------------------------

QUIZ = """name: quiz
cluster: my_quiz
template: "Q: {question}\\nOptions:\\n{choices}\\nA:"
options_field: choices
label_field: answer
data: rows.jsonl
"""
QUIZ_ROWS = ('{"question": "2+2?", "choices": ["3", "4", "5"], "answer": "4"}\n'
             '{"question": "Sky?", "choices": ["blue", "green"], "answer": 0}\n')


def test_per_row_options_from_jsonl(tmp_path):
    (task,) = load_task_file(_write(tmp_path, QUIZ, QUIZ_ROWS))
    assert (task.kind, task.metric, task.options, task.options_field) == (
        "choice", "accuracy", None, "choices")
    assert task.rows[0] == {"fields": {"question": "2+2?", "choices": "- 3\n- 4\n- 5"},
                            "gold": 1, "references": [], "options": ["3", "4", "5"]}
    assert (task.rows[1]["gold"], task.rows[1]["options"]) == (0, ["blue", "green"])


def test_per_row_options_from_a_csv_json_list_cell(tmp_path):
    rows = 'question,choices,answer\n2+2?,"[""3"", ""4""]",1\n'
    (task,) = load_task_file(_write(tmp_path, QUIZ.replace("rows.jsonl", "rows.csv"), rows,
                                    "rows.csv"))
    assert (task.rows[0]["options"], task.rows[0]["gold"]) == (["3", "4"], 1)
    _write(tmp_path, QUIZ.replace("rows.jsonl", "rows.csv"), "question,choices,answer\n"
           "2+2?,3 or 4,4\n", "rows.csv")
    with pytest.raises(TaskFileError, match=r"rows.csv:2: field 'choices' = '3 or 4' is not a "
                                            r"JSON list .*write the options as a JSON list"):
        load_task_file(tmp_path / "task.yaml")


@pytest.mark.parametrize("row, message", [
    ('"choices": ["4"], "answer": "4"', r"field 'choices' = \['4'\] must be a list of at least "
                                        r"two options"),
    ('"choices": "3, 4", "answer": "4"', r"field 'choices' = '3, 4' must be a list"),
    ('"choices": ["3", "4"], "answer": "5"', r"field 'answer' = '5' is neither an option "
                                             r"\['3', '4'\] nor an index \(0 to 1\); give"),
    ('"choices": ["3", "4"], "answer": 2', r"field 'answer' = 2 is neither"),
    ('"choices": ["3", "4", "3 "], "answer": "4"', r"field 'choices' = .* lists '3' twice; "
                                                   r"make every option distinct"),
    ('"choices": ["3", 4], "answer": "3"', r"field 'choices' = \['3', 4\] has option 4, "
                                           r"expected non-empty text"),
    ('"choices": ["3", "4"]', r"row lacks field 'answer'"),
])
def test_bad_per_row_options_name_file_line_and_field(tmp_path, row, message):
    _write(tmp_path, QUIZ, QUIZ_ROWS + '{"question": "q", ' + row + "}\n")
    with pytest.raises(TaskFileError, match=r"rows.jsonl:3: " + message) as err:
        load_task_file(tmp_path / "task.yaml")
    assert "\n" not in str(err.value)


def test_options_and_options_field_are_exclusive(tmp_path):
    both = QUIZ + "options: [a, b]\n"
    with pytest.raises(TaskFileError, match=r"task.yaml:4: a choice task takes exactly one of "
                                            r"'options' .* got both; keep one"):
        load_task_file(_write(tmp_path, both, QUIZ_ROWS))
    neither = QUIZ.replace("options_field: choices\n", "")
    with pytest.raises(TaskFileError, match=r"task.yaml:1: .* got neither"):
        load_task_file(_write(tmp_path, neither, QUIZ_ROWS))


@pytest.fixture
def quiz_registered():
    yield
    unregister_custom_task("quiz")


def test_per_row_options_reach_queries_and_prompts(tmp_path, quiz_registered):
    (task,) = load_task_file(_write(tmp_path, QUIZ, QUIZ_ROWS))
    catalogue_task = register_custom_task(task, tmp_path / "custom")
    rows = load_rows(catalogue_task, "test", tmp_path)  # the mirror path is absolute
    examples = convert_rows(catalogue_task, "test", rows, seed=0)
    queries = [e.to_query() for e in examples]
    assert [(q.options, q.gold) for q in queries] == [(["3", "4", "5"], 1), (["blue", "green"], 0)]
    assert queries[0].input == "Q: 2+2?\nOptions:\n- 3\n- 4\n- 5\nA:"
    assert [e.to_prompt().text.rsplit(" ", 1)[1] for e in examples] == ["4", "blue"]
    assert [e.example.target for e in examples] == ["4", "blue"]


def _readme_example(readme: str, folder: Path) -> tuple[Path, str, str]:
    """The README's options_field example: (task file, its JSONL rows, the same rows as CSV)."""
    blocks = re.findall(r"```(\w+)\n(.*?)```", readme, re.S)
    start = next((i for i, (lang, text) in enumerate(blocks)
                  if lang == "yaml" and "options_field:" in text), None)
    assert start is not None, "README.md has no ```yaml example with options_field:"
    after = dict(reversed(blocks[start + 1:]))  # the first block of each language after it
    path = folder / "task.yaml"
    path.write_text(blocks[start][1])
    return path, after["jsonl"], after["csv"]


def test_readme_options_field_example_loads(tmp_path):
    path, jsonl, csv_rows = _readme_example(README.read_text(encoding="utf-8"), tmp_path)
    data = yaml.safe_load(path.read_text())["data"]
    (tmp_path / data).write_text(jsonl)
    (tmp_path / "rows.csv").write_text(csv_rows)
    (task,) = load_task_file(path)
    path.write_text(path.read_text().replace(f"data: {data}", "data: rows.csv"))
    (from_csv,) = load_task_file(path)
    assert task.kind == "choice" and task.options_field and task.rows == from_csv.rows
    assert all(r["options"][r["gold"]] for r in task.rows) and len(task.rows) >= 2


# --- where `data:` may point ----------------------------------------------------------------

@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_data_outside_the_task_folder_is_refused(tmp_path, where):
    folder = tmp_path / "tasks"
    (folder / "sub").mkdir(parents=True)
    outside = tmp_path / "rows.jsonl"
    outside.write_text('{"text": "a", "label": "sad"}\n')
    value = {"parent": "../rows.jsonl", "absolute": str(outside), "symlink": "link.jsonl"}[where]
    (folder / "link.jsonl").symlink_to(outside)
    path = _write(folder, CHOICE.replace("data: rows.jsonl", f"data: {value}"), "")
    with pytest.raises(TaskFileError, match=rf"{path}:6: field 'data' = '{re.escape(value)}' "
                                            r"resolves to .* outside the task file's folder .*"
                                            r"allow_outside_data=True"):
        load_task_file(path)
    (task,) = load_task_file(path, allow_outside_data=True)
    assert task.rows[0]["gold"] == 0


def test_data_in_a_subfolder_is_fine(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "rows.jsonl").write_text('{"text": "a", "label": "sad"}\n')
    path = _write(tmp_path, CHOICE.replace("data: rows.jsonl", "data: sub/../sub/rows.jsonl"),
                  "")
    assert load_task_file(path)[0].rows[0]["gold"] == 0
