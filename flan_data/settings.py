"""`DataSettings`: the data stage's protocol options, declared once for every command line.

Contract: `DataSettings(...)` is what `uprise data` builds (`build(data_dir)` -> `StageData`,
held-out-cluster protocol, or in-task with `in_task`); `check()` refuses out-of-range counts and
unknown task or cluster names with a `ValueError` naming the option, before anything is loaded.
`OPTIONS` declares each field's command-line flag, type and help once: `add_arguments(parser)`
adds them with these defaults (`uprise data`), `add_arguments(parser, names, overrides=True)`
adds the named ones with default None, so a value given on the command line overrides a config
file's (`uprise quickstart`, `uprise eval --clusters`); `from_args(args)` reads them back.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flan_data.catalogue import get_task
from flan_data.protocol import StageData, build_in_task_data, build_stage_data, check_clusters

OPTIONS: dict[str, dict[str, Any]] = {
    "held_out_cluster": {"help": "the cluster evaluated and never trained on"},
    "in_task": {"metavar": "TASK", "help": "in-task mode (EPR-style): pool and training "
                "queries from TASK's training split, evaluation on its evaluation split; "
                "replaces the held-out-cluster protocol"},
    "train_clusters": {"nargs": "+", "help": "training clusters (default: every cluster but "
                       "the held-out one)"},
    "seed": {"type": int, "help": "seeds every sample of the protocol"},
    "pool_per_task": {"type": int, "help": "class-balanced pool prompts per training task"},
    "queries_per_task": {"type": int, "help": "training queries per training task"},
    "n_candidates": {"type": int, "help": "scored candidate prompts per training query (L)"},
    "cross_cluster_candidates": {"type": int, "help": "how many of the L candidates come from "
                                 "the other training clusters' prompts instead of the query's "
                                 "own task (a held-out query's situation); 0: the paper's rule"},
    "eval_per_task": {"type": int, "help": "evaluation examples per held-out task"},
    "carve_fraction": {"type": float, "help": "share of the evaluation split carved out as "
                       "training data of a training task that has no train split (in-task: "
                       "of a task that has nothing but its evaluation split)"},
    "max_prompt_chars": {"type": int, "help": "drop demonstrations longer than this"},
    "dev_per_task": {"type": int, "help": "in-task: rows of the training split withheld from "
                     "pool and training queries as development queries (`uprise eval --on dev`), "
                     "to choose between recipes without the evaluation split; 0: none"},
}
_COUNTS = {  # field: (smallest value, None allowed)
    "seed": (0, False), "pool_per_task": (1, False), "queries_per_task": (1, False),
    "n_candidates": (1, False), "eval_per_task": (1, True), "max_prompt_chars": (1, False),
    "dev_per_task": (0, False), "cross_cluster_candidates": (0, False),
}


@dataclass(frozen=True)
class DataSettings:
    held_out_cluster: str = "sentiment"
    in_task: str | None = None
    train_clusters: tuple[str, ...] | None = None
    seed: int = 42
    pool_per_task: int | None = 1000
    queries_per_task: int | None = 200
    n_candidates: int = 50
    cross_cluster_candidates: int = 0
    eval_per_task: int | None = None
    carve_fraction: float = 0.5
    max_prompt_chars: int | None = 1500
    dev_per_task: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.train_clusters, list):
            object.__setattr__(self, "train_clusters", tuple(self.train_clusters))

    def check(self) -> None:
        """Refuses bad values (`ValueError` naming the option)."""
        for name, (low, optional) in _COUNTS.items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"--{name.replace('_', '-')} {value}: expected an integer >= "
                                 f"{low}{' (omit it for all)' if optional else ''}")
        if self.cross_cluster_candidates > self.n_candidates:
            raise ValueError(f"--cross-cluster-candidates {self.cross_cluster_candidates}: "
                             f"expected at most --n-candidates ({self.n_candidates})")
        if not 0.0 < self.carve_fraction <= 1.0:
            raise ValueError(f"--carve-fraction {self.carve_fraction}: expected a fraction in "
                             "(0, 1]")
        if self.in_task:
            get_task(self.in_task)  # an unknown task fails here, listing the known ones
            if self.cross_cluster_candidates:
                raise ValueError(f"--cross-cluster-candidates {self.cross_cluster_candidates}: "
                                 "in-task mode has one task and no other cluster; drop it")
        elif self.dev_per_task:
            raise ValueError(f"--dev-per-task {self.dev_per_task}: development queries are an "
                             "in-task option; add --in-task TASK or drop it")
        else:
            check_clusters(self.held_out_cluster, list(self.train_clusters or []) or None)

    def build(self, data_dir: Path | None) -> StageData:
        """The stage data of these settings from `data_dir` (None: the Hub)."""
        if self.in_task:
            return build_in_task_data(self.in_task, data_dir, self.seed, self.pool_per_task,
                                      self.queries_per_task, self.n_candidates,
                                      self.eval_per_task, self.max_prompt_chars,
                                      self.carve_fraction, self.dev_per_task)
        return build_stage_data(
            self.held_out_cluster, data_dir, list(self.train_clusters or []) or None,
            seed=self.seed, pool_per_task=self.pool_per_task,
            queries_per_task=self.queries_per_task, n_candidates=self.n_candidates,
            eval_per_task=self.eval_per_task, carve_fraction=self.carve_fraction,
            max_prompt_chars=self.max_prompt_chars,
            cross_cluster_candidates=self.cross_cluster_candidates)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DataSettings:
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                  names: list[str] | None = None, overrides: bool = False) -> None:
    """Adds the `OPTIONS` named in `names` (default: all) to `parser`, with `DataSettings`'
    defaults, or with default None when `overrides` (a config file supplies the rest)."""
    defaults = DataSettings()
    for name in names or list(OPTIONS):
        spec = dict(OPTIONS[name])
        default = None if overrides else getattr(defaults, name)
        if overrides:
            spec["help"] += " (default: the config's)"
        elif default is not None:
            spec["help"] += f" (default {default})"
        elif name in _COUNTS:
            spec["help"] += " (default: all)"
        parser.add_argument("--" + name.replace("_", "-"), default=default, **spec)
