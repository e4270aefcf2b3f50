"""Which pool prompts a query may draw from: a small typed filter by task and cluster.

Contract: `PromptFilter(task=..., cluster=..., exclude_task=..., exclude_cluster=...)` keeps a
prompt when (no `task` given or its task is in `task`) and (no `cluster` given or its cluster is
in `cluster`) and its task/cluster is in neither exclude list. `PromptFilter.coerce(value)`
accepts None, a `PromptFilter`, or a dict with exactly those keys (a single string or a list of
strings each) and raises `ValueError` naming unknown keys. `PoolFilterer(prompts)` checks a
filter's values against the pool (naming the unknown value and the known ones) and turns it into
a boolean mask over FAISS ids (row i = id i), cached per filter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np

from flan_data.schema import Prompt


def _as_tuple(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and all(isinstance(v, str) for v in value):
        return tuple(sorted(set(value)))
    raise TypeError(f"filter {name}={value!r}; expected a string or a list of strings.")


@dataclass(frozen=True)
class PromptFilter:
    """Include/exclude lists of tasks and clusters; empty include = everything."""

    task: tuple[str, ...] = ()
    cluster: tuple[str, ...] = ()
    exclude_task: tuple[str, ...] = ()
    exclude_cluster: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _as_tuple(f.name, getattr(self, f.name)))

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, key) for key in FILTER_KEYS)

    @classmethod
    def coerce(cls, value: PromptFilter | dict[str, Any] | None) -> PromptFilter | None:
        """None, a PromptFilter, or a dict such as `{"cluster": ["nli"], "exclude_task": "rte"}`."""
        if value is None or isinstance(value, PromptFilter):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"filters={value!r}; expected None, a dict or a serve.PromptFilter.")
        unknown = sorted(set(value) - set(FILTER_KEYS))
        if unknown:
            raise ValueError(f"unknown filter key(s) {unknown}; expected some of "
                             f"{list(FILTER_KEYS)}, "
                             'e.g. filters={"cluster": ["nli"], "exclude_task": ["rte"]}.')
        return cls(**value)


FILTER_KEYS = tuple(f.name for f in fields(PromptFilter))  # task, cluster, exclude_task, ...


class PoolFilterer:
    """Validates filters against a pool's tasks and clusters and builds id masks."""

    def __init__(self, prompts: Sequence[Prompt]) -> None:
        self.tasks = sorted({p.task for p in prompts})
        self.clusters = sorted({p.cluster for p in prompts})
        task_code = {t: i for i, t in enumerate(self.tasks)}
        cluster_code = {c: i for i, c in enumerate(self.clusters)}
        self._task = np.fromiter((task_code[p.task] for p in prompts), np.int32, len(prompts))
        self._cluster = np.fromiter((cluster_code[p.cluster] for p in prompts), np.int32,
                                    len(prompts))
        self.mask = lru_cache(maxsize=64)(self._mask)

    def validate(self, flt: PromptFilter) -> None:
        for name, known in (("task", self.tasks), ("cluster", self.clusters)):
            for key in (name, f"exclude_{name}"):
                unknown = sorted(set(getattr(flt, key)) - set(known))
                if unknown:
                    raise ValueError(f"filter {key}={unknown} names no {name} in this pool; "
                                     f"known {name}s: {known}.")

    def _mask(self, flt: PromptFilter) -> np.ndarray:
        """(n_prompts,) bool: True where the prompt passes `flt`."""
        self.validate(flt)
        keep = np.ones(len(self._task), dtype=bool)  # (n_prompts,)
        for values, codes, names, include in (
            (flt.task, self._task, self.tasks, True),
            (flt.cluster, self._cluster, self.clusters, True),
            (flt.exclude_task, self._task, self.tasks, False),
            (flt.exclude_cluster, self._cluster, self.clusters, False),
        ):
            if values:
                hit = np.isin(codes, [names.index(v) for v in values])
                keep &= hit if include else ~hit
        return keep
