"""Bring your own task: a task described in a YAML or JSONL file, evaluated without code.

Contract: `load_task_file(path)` reads one task (a YAML mapping), several (a YAML list, or a
JSONL file with one task object per line), validates every field and every data row, and
returns `CustomTask`s; every error is a `TaskFileError` naming the file, the line and the field.
A task file's keys:

    name         new task id: lower case letters, digits, underscores (not a built-in task)
    cluster      its task cluster: a built-in one (then that cluster is held out from the
                 retriever's training) or a new name
    template     the query input, with {field} placeholders filled from each data row
    options      answer options (choice task), with
    label_field  the row field holding the gold option (its text, or its 0-based index)
    target_field the row field holding the reference answer (generation task), instead
    metric       accuracy (choice; the default) | exact_match | f1 | rouge_l (generation;
                 default rouge_l)
    data         the rows: a .jsonl or .csv file, relative to the task file

`register_custom_task(task, folder)` writes the validated rows to `folder/<name>/test.jsonl.gz`
and registers a catalogue `Task` whose mirror is that (absolute) folder, so `load_rows` and the
held-out-cluster protocol (`build_stage_data`, `evaluation_queries`, `check_no_leakage`) treat
it like a built-in task under any data dir. A registered task is part of its cluster for the
rest of the process (`unregister_custom_task` removes it): evaluate it with its cluster held out.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flan_data.catalogue import Example, Task, all_tasks, get_task, register

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
KEYS = ("name", "cluster", "template", "options", "label_field", "target_field", "metric", "data")
CHOICE_METRICS, GENERATION_METRICS = ("accuracy",), ("exact_match", "f1", "rouge_l")
_REGISTERED: dict[str, tuple[Task, str]] = {}


class TaskFileError(ValueError):
    """A task file or its data rows are not valid; the message names file, line and field."""


@dataclass(frozen=True)
class CustomTask:
    name: str
    cluster: str
    template: str
    metric: str
    data: Path
    rows: tuple[dict[str, Any], ...]
    """Validated rows: {"fields": {placeholder: text}, "gold": int | None, "references": [...]}"""
    options: tuple[str, ...] | None = None

    @property
    def kind(self) -> str:
        return "choice" if self.options is not None else "generation"


def _fail(where: str, message: str) -> TaskFileError:
    return TaskFileError(f"{where}: {message}")


def _yaml_entries(path: Path) -> list[tuple[dict, dict[str, int], int]]:
    """(mapping, key -> line, line) per task of a YAML file."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise _fail(f"{path}:{line}", f"not valid YAML ({err})") from err
    nodes, items = ([root], [data]) if isinstance(data, dict) else (
        (root.value, data) if isinstance(data, list) else (None, None))
    if nodes is None:
        raise _fail(f"{path}:1", "expected a task mapping (or a list of them); see README "
                    "'Bring your own task'")
    out = []
    for node, item in zip(nodes, items, strict=True):
        if not isinstance(item, dict):
            raise _fail(f"{path}:{node.start_mark.line + 1}", "expected a task mapping")
        lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
        out.append((item, lines, node.start_mark.line + 1))
    return out


def _jsonl_entries(path: Path) -> list[tuple[dict, dict[str, int], int]]:
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise _fail(f"{path}:{lineno}", f"not valid JSON ({err.msg})") from err
        if not isinstance(item, dict):
            raise _fail(f"{path}:{lineno}", "expected one JSON task object per line")
        out.append((item, dict.fromkeys(item, lineno), lineno))
    return out


def load_task_file(path: str | Path) -> list[CustomTask]:
    """Reads and validates a task file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"{path}: no such task file; pass a .yaml/.yml or .jsonl file")
    if path.suffix in (".yaml", ".yml"):
        entries = _yaml_entries(path)
    elif path.suffix == ".jsonl":
        entries = _jsonl_entries(path)
    else:
        raise TaskFileError(f"{path}: unsupported task file type {path.suffix!r}; use .yaml, "
                            ".yml or .jsonl")
    tasks = [_parse_task(path, *entry) for entry in entries]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise TaskFileError(f"{path}: task names must be unique, got {names}")
    return tasks


def _field(item: dict, key: str, where: str, kind: type = str) -> Any:
    value = item.get(key)
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise _fail(where, f"field {key!r} must be a non-empty {kind.__name__}, got {value!r}")
    return value


def _parse_task(path: Path, item: dict, lines: dict[str, int], line: int) -> CustomTask:
    at = {k: f"{path}:{lines.get(k, line)}" for k in KEYS}
    unknown = sorted(set(item) - set(KEYS))
    if unknown:
        raise _fail(f"{path}:{lines[unknown[0]]}", f"unknown field(s) {unknown}; expected "
                    f"{list(KEYS)}")
    for key in ("name", "cluster", "template", "data"):
        if key not in item:
            raise _fail(f"{path}:{line}", f"missing required field {key!r}")
    name, cluster = _field(item, "name", at["name"]), _field(item, "cluster", at["cluster"])
    for key, value in (("name", name), ("cluster", cluster)):
        if not NAME.match(value):
            raise _fail(at[key], f"field {key!r} = {value!r} must match {NAME.pattern}")
    template = _field(item, "template", at["template"])
    placeholders = _placeholders(template, at["template"])
    choice = "options" in item or "label_field" in item
    if choice == ("target_field" in item):
        raise _fail(f"{path}:{line}", "give either 'options' with 'label_field' (choice task) "
                    "or 'target_field' (generation task)")
    options = _options(item, at) if choice else None
    answer_key = "label_field" if choice else "target_field"
    metric = item.get("metric", "accuracy" if choice else "rouge_l")
    allowed = CHOICE_METRICS if choice else GENERATION_METRICS
    if metric not in allowed:
        raise _fail(at["metric"], f"metric {metric!r} is not valid for a "
                    f"{'choice' if choice else 'generation'} task; expected one of {allowed}")
    data = path.parent / _field(item, "data", at["data"])
    rows = _read_rows(data, at["data"], placeholders, _field(item, answer_key, at[answer_key]),
                      options)
    return CustomTask(name, cluster, template, metric, data, tuple(rows),
                      None if options is None else tuple(options))


def _placeholders(template: str, where: str) -> list[str]:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise _fail(where, f"field 'template' is not a valid template ({err}); write "
                    "placeholders as {field} and literal braces as {{ }}") from err
    if not names or any(not n.isidentifier() for n in names):
        raise _fail(where, f"field 'template' needs {{field}} placeholders naming row fields, "
                    f"got {names}")
    return sorted(set(names))


def _options(item: dict, at: dict[str, str]) -> list[str]:
    options = item.get("options")
    if (not isinstance(options, list) or len(options) < 2
            or not all(isinstance(o, str | int | float) for o in options)):
        raise _fail(at["options"], f"field 'options' must list at least two answers, got "
                    f"{options!r}")
    if "label_field" not in item:
        raise _fail(at["options"], "a choice task also needs 'label_field'")
    return [str(o) for o in options]


def _raw_rows(data: Path, where: str) -> list[tuple[int, Any]]:
    if not data.is_file():
        raise _fail(where, f"field 'data': no such file {data}")
    if data.suffix == ".csv":
        with data.open(encoding="utf-8", newline="") as fh:
            return [(i + 2, row) for i, row in enumerate(csv.DictReader(fh))]
    if data.suffix != ".jsonl":
        raise _fail(where, f"field 'data': {data} must be a .jsonl or .csv file")
    rows = []
    for lineno, line in enumerate(data.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as err:
                raise _fail(f"{data}:{lineno}", f"not valid JSON ({err.msg})") from err
    return rows


def _gold(value: Any, options: list[str], where: str, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(options):
        return value
    text = str(value).strip()
    if text in options:
        return options.index(text)
    if text.isdigit() and int(text) < len(options):
        return int(text)
    raise _fail(where, f"field {key!r} = {value!r} is neither an option {options} nor an index")


def _read_rows(data: Path, where: str, placeholders: list[str], answer_key: str,
               options: list[str] | None) -> list[dict[str, Any]]:
    rows = []
    for lineno, row in _raw_rows(data, where):
        at = f"{data}:{lineno}"
        if not isinstance(row, dict):
            raise _fail(at, "expected a JSON object per line")
        for key in [*placeholders, answer_key]:
            if row.get(key) is None or str(row[key]).strip() == "":
                raise _fail(at, f"row lacks field {key!r} (the task file uses it)")
        fields = {k: str(row[k]) for k in placeholders}
        if options is None:
            rows.append({"fields": fields, "gold": None, "references": [str(row[answer_key])]})
        else:
            gold = _gold(row[answer_key], options, at, answer_key)
            rows.append({"fields": fields, "gold": gold, "references": []})
    if not rows:
        raise _fail(where, f"field 'data': {data} has no rows")
    return rows


def register_custom_task(task: CustomTask, folder: str | Path) -> Task:
    """Writes the rows under `folder` and registers the task (see the module docstring)."""
    mirror = (Path(folder) / task.name).resolve()
    digest = json.dumps([task.template, task.metric, task.options, task.cluster, task.rows])
    if task.name in _REGISTERED:
        if _REGISTERED[task.name][1] != digest:
            raise TaskFileError(f"task {task.name!r} is already registered with another "
                                "definition in this process; give the new task another name")
        return _REGISTERED[task.name][0]
    if task.name in {t.name for t in all_tasks()}:
        raise TaskFileError(f"task name {task.name!r} is a built-in task; choose another name")
    mirror.mkdir(parents=True, exist_ok=True)
    with gzip.open(mirror / "test.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in task.rows)
    options = list(task.options) if task.options is not None else None
    registered = register(Task(
        task.name, task.cluster, f"custom:{task.data}", None, str(mirror), "test", task.kind,
        task.metric, lambda r: _example(r, options), (task.template,), train_split=None))
    _REGISTERED[task.name] = (registered, digest)
    return get_task(task.name)


def unregister_custom_task(name: str) -> None:
    """Removes a task registered by `register_custom_task` (no-op for other names), so that a
    long-lived process (or a test session) does not keep a user task in its clusters."""
    from flan_data import catalogue

    if _REGISTERED.pop(name, None) is not None:
        catalogue._REGISTRY.pop(name, None)


def _example(row: dict[str, Any], options: list[str] | None) -> Example:
    if options is None:
        return Example(fields=dict(row["fields"]), references=list(row["references"]))
    return Example(fields=dict(row["fields"]), options=options, gold=int(row["gold"]))
