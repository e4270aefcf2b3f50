"""A seeded subset of a data-stage folder's training queries, to score with a slow LM.

    .venv/bin/python bench/subset_data.py --data RUN/cache/struct_to_text/data \
        --per-task 20 --choice-only --out SUB/data

Keeps `--per-task` training queries of each task (`random.Random(seed).sample` of the task's
query ids, sorted first; a task with fewer keeps all), optionally only the tasks with options
(choice tasks), and their candidate records unchanged; the pool and the evaluation queries are
copied as they are. The manifest's `train_queries` count is updated and `subset_of` records the
source folder and settings, so `uprise score --data OUT` scores exactly those queries'
candidates (the same pairs as in the source: a scorer that scored the source answers them from
the score cache). Used to compare scoring LMs' labels (`bench/scorer_labels.py`) where a full
fold does not fit the budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data.protocol import StageData  # noqa: E402
from flan_data.stage_io import DATA_MANIFEST, read_stage_data, write_stage_data  # noqa: E402


def subset_stage(stage: StageData, per_task: int, seed: int, choice_only: bool,
                 source: str = "") -> StageData:
    """The stage with `per_task` seeded training queries per (choice) task; see the module doc."""
    if per_task < 1:
        raise SystemExit(f"--per-task {per_task}: expected an integer >= 1")
    by_task: dict[str, list[str]] = defaultdict(list)
    for q in stage.train_queries:
        if q.is_choice or not choice_only:
            by_task[q.task].append(q.id)
    if not by_task:
        raise SystemExit(f"{source or 'the data folder'}: no training query of a "
                         f"{'choice ' if choice_only else ''}task to keep")
    keep: set[str] = set()
    for task in sorted(by_task):
        ids = sorted(by_task[task])
        keep |= set(random.Random(seed).sample(ids, min(per_task, len(ids))))
    queries = [q for q in stage.train_queries if q.id in keep]
    manifest = {**stage.manifest,
                "counts": {**stage.manifest.get("counts", {}), "train_queries": len(queries)},
                "subset_of": {"folder": source, "tasks": sorted(by_task),
                              "per_task": per_task, "seed": seed, "choice_only": choice_only}}
    return dataclasses.replace(stage, train_queries=queries, manifest=manifest,
                               candidates=[c for c in stage.candidates if c.query_id in keep])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="data-stage folder to subset")
    p.add_argument("--out", type=Path, required=True, help="new data-stage folder")
    p.add_argument("--per-task", type=int, required=True)
    p.add_argument("--choice-only", action="store_true", help="keep only tasks with options")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    if (args.out / DATA_MANIFEST).exists():
        raise SystemExit(f"{args.out} already holds a data stage; choose another --out")
    stage = subset_stage(read_stage_data(args.data), args.per_task, args.seed,
                         args.choice_only, str(args.data))
    write_stage_data(stage, args.out)
    print(f"{len(stage.manifest['subset_of']['tasks'])} tasks, {len(stage.train_queries)} "
          f"training queries -> {args.out}")


if __name__ == "__main__":
    main()
