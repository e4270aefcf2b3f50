"""Bring your own task: a task described in a YAML or JSONL file, evaluated without code.

Contract: `load_task_file(path)` reads one task (a YAML mapping), several (a YAML list, or a
JSONL file with one task object per line), validates every field and every data row, and
returns `CustomTask`s; every error is a `TaskFileError` naming the file, the line and the field.
All checks run here, before any model loads. A task file's keys:

    name          new task id: lower case letters, digits, underscores (not a built-in task)
    cluster       its task cluster: a built-in one (then that cluster is held out from the
                  retriever's training) or a new name
    template      the query input, with {field} placeholders filled from each data row
    options       answer options shared by every row (choice task), or
    options_field the row field holding that row's own options (a JSON list; in a CSV, a cell
                  holding a JSON list); a placeholder naming it renders "- option" lines
    label_field   the row field holding the gold option (its text, or its 0-based index)
    target_field  the row field holding the reference answer (generation task), instead
    metric        accuracy (choice; the default) | exact_match | f1 | rouge_l (generation;
                  default rouge_l)
    max_new_tokens generation task: greedy decoding budget of an answer, a positive integer
                  (default 32); cover the longest answers you expect
    data          the rows: a .jsonl, .jsonl.gz or .csv file (`flan_data.task_rows` reads
                  them), relative to the task file and inside its folder (subfolders are
                  fine) unless loaded with `allow_outside_data=True`

`register_custom_task(task, folder)` writes the validated rows to `folder/<name>/test.jsonl.gz`
and registers a catalogue `Task` whose mirror is that (absolute) folder, so `load_rows` and the
held-out-cluster protocol (`build_stage_data`, `evaluation_queries`, `check_no_leakage`) treat
it like a built-in task under any data dir. Its examples carry options and gold as built-in
choice tasks do (`Example.options`, per row where the task has `options_field`). A registered
task is part of its cluster for the rest of the process (`unregister_custom_task` removes it):
evaluate it with its cluster held out.
"""

from __future__ import annotations

import gzip
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flan_data.catalogue import Example, Task, all_tasks, get_task, register
from flan_data.task_rows import TaskFileError, data_suffix, jsonl_values, read_rows

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
KEYS = ("name", "cluster", "template", "options", "options_field", "label_field", "target_field",
        "metric", "max_new_tokens", "data")
CHOICE_METRICS, GENERATION_METRICS = ("accuracy",), ("exact_match", "f1", "rouge_l")
_REGISTERED: dict[str, tuple[Task, str]] = {}


@dataclass(frozen=True)
class CustomTask:
    name: str
    cluster: str
    template: str
    metric: str
    data: Path
    rows: tuple[dict[str, Any], ...]
    """Validated rows: {"fields": {placeholder: text}, "gold": int | None, "references": [...]},
    plus "options": [...] (that row's options) where the task has `options_field`."""
    options: tuple[str, ...] | None = None
    options_field: str | None = None
    max_new_tokens: int = Task.max_new_tokens

    @property
    def kind(self) -> str:
        choice = self.options is not None or self.options_field is not None
        return "choice" if choice else "generation"


@dataclass(frozen=True)
class _RowSpec:
    """What every data row must provide, from the task file's fields."""

    placeholders: list[str]
    answer_key: str
    options: list[str] | None = None
    options_field: str | None = None

    @property
    def choice(self) -> bool:
        return self.options is not None or self.options_field is not None


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
    for lineno, item in jsonl_values(path.read_bytes(), path):
        if not isinstance(item, dict):
            raise _fail(f"{path}:{lineno}", "expected one JSON task object per line")
        out.append((item, dict.fromkeys(item, lineno), lineno))
    return out


def load_task_file(path: str | Path, *, allow_outside_data: bool = False) -> list[CustomTask]:
    """Reads and validates a task file (see the module docstring). `allow_outside_data` lets
    `data:` name a file outside the task file's folder (by `..`, an absolute path or a link)."""
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
    tasks = [_parse_task(path, *entry, allow_outside_data) for entry in entries]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise TaskFileError(f"{path}: task names must be unique, got {names}")
    return tasks


def _field(item: dict, key: str, where: str, kind: type = str) -> Any:
    value = item.get(key)
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise _fail(where, f"field {key!r} must be a non-empty {kind.__name__}, got {value!r}")
    return value


def _parse_task(path: Path, item: dict, lines: dict[str, int], line: int,
                allow_outside_data: bool) -> CustomTask:
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
    spec = _row_spec(item, at, f"{path}:{line}", _placeholders(template, at["template"]))
    metric = _metric(item, at, spec.choice)
    budget = _budget(item, at, spec.choice)
    data = _data_path(path, _field(item, "data", at["data"]), at["data"], allow_outside_data)
    rows = _read_rows(data, at["data"], spec)
    return CustomTask(name, cluster, template, metric, data, tuple(rows),
                      None if spec.options is None else tuple(spec.options), spec.options_field,
                      budget)


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


def _row_spec(item: dict, at: dict[str, str], where: str, placeholders: list[str]) -> _RowSpec:
    choice = any(k in item for k in ("options", "options_field", "label_field"))
    if choice == ("target_field" in item):
        raise _fail(where, "give either 'options' or 'options_field', with 'label_field' "
                    "(choice task), or 'target_field' (generation task)")
    if not choice:
        return _RowSpec(placeholders, _field(item, "target_field", at["target_field"]))
    if ("options" in item) == ("options_field" in item):
        both = "options" in item
        raise _fail(at["options_field"] if both else where, "a choice task takes exactly one "
                    "of 'options' (one list for every row) and 'options_field' (the row field "
                    f"holding each row's list), got {'both' if both else 'neither'}; keep one")
    if "label_field" not in item:
        raise _fail(at["options"] if "options" in item else at["options_field"],
                    "a choice task also needs 'label_field' (the row field holding the gold)")
    label = _field(item, "label_field", at["label_field"])
    if "options_field" in item:
        return _RowSpec(placeholders, label,
                        options_field=_field(item, "options_field", at["options_field"]))
    return _RowSpec(placeholders, label, options=_options(item, at))


def _options(item: dict, at: dict[str, str]) -> list[str]:
    options = item.get("options")
    if (not isinstance(options, list) or len(options) < 2
            or not all(isinstance(o, str | int | float) for o in options)):
        raise _fail(at["options"], f"field 'options' must list at least two answers, got "
                    f"{options!r}")
    return _distinct([str(o) for o in options], at["options"], "options")


def _distinct(options: list[str], where: str, key: str) -> list[str]:
    seen = [o.strip() for o in options]
    for i, option in enumerate(seen):
        if option in seen[:i]:
            raise _fail(where, f"field {key!r} = {options!r} lists {option!r} twice; make "
                        "every option distinct")
    return options


def _metric(item: dict, at: dict[str, str], choice: bool) -> str:
    metric = item.get("metric", "accuracy" if choice else "rouge_l")
    allowed = CHOICE_METRICS if choice else GENERATION_METRICS
    if metric not in allowed:
        raise _fail(at["metric"], f"metric {metric!r} is not valid for a "
                    f"{'choice' if choice else 'generation'} task; expected one of {allowed}")
    return metric


def _budget(item: dict, at: dict[str, str], choice: bool) -> int:
    if "max_new_tokens" not in item:
        return Task.max_new_tokens
    value = item["max_new_tokens"]
    if choice:
        raise _fail(at["max_new_tokens"], "field 'max_new_tokens' applies to generation tasks "
                    "(a choice task scores its options and generates nothing); remove it")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise _fail(at["max_new_tokens"], f"field 'max_new_tokens' must be an integer from 1 to "
                    f"1024, got {value!r}")
    return value


def _data_path(path: Path, value: str, where: str, allow_outside: bool) -> Path:
    """`value` relative to the task file, refused where it resolves outside the file's folder."""
    data, folder = path.parent / value, path.parent.resolve()
    if not allow_outside and not data.resolve().is_relative_to(folder):
        raise _fail(where, f"field 'data' = {value!r} resolves to {data.resolve()}, outside "
                    f"the task file's folder {folder}; move the data file into that folder (or "
                    "a subfolder) and name it relative to the task file, or load the task file "
                    "with allow_outside_data=True")
    return data


def _read_rows(data: Path, where: str, spec: _RowSpec) -> list[dict[str, Any]]:
    from_csv = data_suffix(data) == ".csv"
    rows = [_row(row, f"{data}:{lineno}", spec, from_csv) for lineno, row in
            read_rows(data, where)]
    if not rows:
        raise _fail(where, f"field 'data': {data} has no rows; add at least one")
    return rows


def _row(row: Any, at: str, spec: _RowSpec, from_csv: bool) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise _fail(at, f"expected a JSON object per line, got {row!r}")
    for key in [*spec.placeholders, spec.answer_key, *filter(None, [spec.options_field])]:
        if row.get(key) is None or str(row[key]).strip() == "":
            raise _fail(at, f"row lacks field {key!r} (the task file uses it); add it to every "
                        "row")
    fields = {k: str(row[k]) for k in spec.placeholders}
    answer = row[spec.answer_key]
    if spec.options_field is not None:
        options = _row_options(row[spec.options_field], at, spec.options_field, from_csv)
        if spec.options_field in fields:
            fields[spec.options_field] = "\n".join(f"- {o}" for o in options)
        gold = _gold(answer, options, at, spec.answer_key)
        return {"fields": fields, "gold": gold, "references": [], "options": options}
    if spec.options is not None:
        gold = _gold(answer, spec.options, at, spec.answer_key)
        return {"fields": fields, "gold": gold, "references": []}
    return {"fields": fields, "gold": None, "references": [str(answer)]}


def _row_options(value: Any, at: str, key: str, from_csv: bool) -> list[str]:
    if from_csv:
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise _fail(at, f"field {key!r} = {value!r} is not a JSON list ({err.msg}); in a "
                        "CSV write the options as a JSON list, e.g. \"[\"\"red\"\", "
                        "\"\"blue\"\"]\"") from err
    if not isinstance(value, list) or len(value) < 2:
        raise _fail(at, f"field {key!r} = {value!r} must be a list of at least two options, "
                    "e.g. [\"red\", \"blue\"]")
    bad = [o for o in value if not isinstance(o, str) or not o.strip()]
    if bad:
        raise _fail(at, f"field {key!r} = {value!r} has option {bad[0]!r}, expected non-empty "
                    "text; write every option as a string, e.g. \"1\" not 1")
    return _distinct(value, at, key)


def _gold(value: Any, options: list[str], where: str, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(options):
        return value
    text = str(value).strip()
    if text in options:
        return options.index(text)
    if text.isascii() and text.isdigit() and int(text) < len(options):
        return int(text)
    raise _fail(where, f"field {key!r} = {value!r} is neither an option {options} nor an index "
                f"(0 to {len(options) - 1}); give the gold option's exact text or its index")


def register_custom_task(task: CustomTask, folder: str | Path) -> Task:
    """Writes the rows under `folder` and registers the task (see the module docstring)."""
    mirror = (Path(folder) / task.name).resolve()
    digest = json.dumps([task.template, task.metric, task.options, task.options_field,
                         task.cluster, task.max_new_tokens, task.rows])
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
        task.metric, lambda r: _example(r, options), (task.template,), train_split=None,
        max_new_tokens=task.max_new_tokens))
    _REGISTERED[task.name] = (registered, digest)
    return get_task(task.name)


def unregister_custom_task(name: str) -> None:
    """Removes a task registered by `register_custom_task` (no-op for other names), so that a
    long-lived process (or a test session) does not keep a user task in its clusters."""
    from flan_data import catalogue

    if _REGISTERED.pop(name, None) is not None:
        catalogue._REGISTRY.pop(name, None)


def _example(row: dict[str, Any], options: list[str] | None) -> Example:
    if row.get("options") is not None:  # the task's options_field: this row's own options
        options = list(row["options"])
    if options is None:
        return Example(fields=dict(row["fields"]), references=list(row["references"]))
    return Example(fields=dict(row["fields"]), options=options, gold=int(row["gold"]))
