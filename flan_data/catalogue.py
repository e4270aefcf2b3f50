"""The task catalogue: which dataset is which task, its cluster, templates, answers and metric.

Contract: `get_task(name)` and `tasks_in(cluster)` are the only lookups; unknown names raise
`UnknownNameError` listing what exists. The built-in tasks (`flan_data.tasks.BUILTIN_TASKS`) are
registered at the first lookup or `register` call, whatever was registered before; `register`
adds a task (a custom one) and refuses a name already taken. `Task` and `Example` are defined in
`flan_data.task_types` and importable from here.
"""

from __future__ import annotations

from flan_data.task_types import Example, Metric, Task, TaskKind
from flan_data.tasks import BUILTIN_TASKS

__all__ = ["Example", "Metric", "Task", "TaskKind", "UnknownNameError", "all_tasks",
           "answer_budget", "clusters", "get_task", "register", "tasks_in"]


class UnknownNameError(ValueError):
    """A task or cluster name is not in the catalogue."""


_REGISTRY: dict[str, Task] = {}
_BUILTINS = {"loaded": False}
"""Whether `BUILTIN_TASKS` are in `_REGISTRY` (they go in at the first lookup or register)."""


def register(task: Task) -> Task:
    """Adds `task` to the catalogue, after the built-in tasks (a name may not repeat)."""
    _ensure_loaded()
    if task.name in _REGISTRY:
        raise ValueError(f"task {task.name!r} registered twice")
    _REGISTRY[task.name] = task
    return task


def _ensure_loaded() -> None:
    """Registers the built-in tasks once, whatever was registered first."""
    if not _BUILTINS["loaded"]:
        _BUILTINS["loaded"] = True
        for task in BUILTIN_TASKS:
            register(task)


def all_tasks() -> list[Task]:
    _ensure_loaded()
    return list(_REGISTRY.values())


def clusters() -> list[str]:
    return sorted({t.cluster for t in all_tasks()})


def get_task(name: str) -> Task:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise UnknownNameError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}. "
            "Use one of these names (see `uprise data --list`)."
        )
    return _REGISTRY[name]


def answer_budget(task_name: str) -> int:
    """Greedy decoding budget (new tokens) for a generation query of `task_name`: the task's
    `max_new_tokens`, or the default 32 for a task the catalogue does not know."""
    _ensure_loaded()
    task = _REGISTRY.get(task_name)
    return task.max_new_tokens if task is not None else Task.max_new_tokens


def tasks_in(cluster: str) -> list[Task]:
    found = [t for t in all_tasks() if t.cluster == cluster]
    if not found:
        raise UnknownNameError(
            f"unknown cluster {cluster!r}; known clusters: {', '.join(clusters())}. "
            "Use one of these names (see `uprise data --list`)."
        )
    return found
