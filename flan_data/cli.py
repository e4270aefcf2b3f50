"""`uprise data`: build the pool, training queries, candidates and evaluation queries.

Contract: `check_data_arguments` refuses out-of-range counts and unknown task or cluster names
(exit status 2, naming the option and the value) before the output folder is created.
"""

from __future__ import annotations

import argparse
import logging

from flan_data.catalogue import all_tasks, get_task
from flan_data.loading import resolve_data_dir
from flan_data.protocol import build_in_task_data, build_stage_data, check_clusters
from flan_data.provenance import run_info
from flan_data.schema import prepare_output_dir
from flan_data.stage_io import write_stage_data

log = logging.getLogger(__name__)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The protocol options, shared by `uprise data` and `uprise quickstart`."""
    parser.add_argument("--held-out-cluster", default="sentiment")
    parser.add_argument("--in-task", default=None, metavar="TASK",
                        help="in-task mode (EPR-style): pool and training queries from TASK's "
                             "training split, evaluation on its evaluation split; replaces the "
                             "held-out-cluster protocol")
    parser.add_argument("--train-clusters", nargs="+", default=None,
                        help="default: every cluster but the held-out one")
    parser.add_argument("--data-dir", default=None,
                        help="offline mirror folder; default ../shared/data if present, else "
                             "the Hub; 'hub' forces the Hub")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--pool-per-task", type=int, default=1000)
    parser.add_argument("--queries-per-task", type=int, default=200)
    parser.add_argument("--n-candidates", type=int, default=50)
    parser.add_argument("--eval-per-task", type=int, default=None)
    parser.add_argument("--carve-fraction", type=float, default=0.5)
    parser.add_argument("--max-prompt-chars", type=int, default=1500)


_COUNTS = {  # option: (smallest value, None allowed)
    "seed": (0, False), "pool_per_task": (1, False), "queries_per_task": (1, False),
    "n_candidates": (1, False), "eval_per_task": (1, True), "max_prompt_chars": (1, False),
}


def check_data_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses bad protocol options through `parser.error` (before anything is loaded or made)."""
    for name, (low, optional) in _COUNTS.items():
        value = getattr(args, name)
        if not (value is None and optional) and (value is None or value < low):
            parser.error(f"--{name.replace('_', '-')} {value}: expected an integer >= {low}"
                         f"{' (omit it for all)' if optional else ''}")
    if not 0.0 < args.carve_fraction <= 1.0:
        parser.error(f"--carve-fraction {args.carve_fraction}: expected a fraction in (0, 1]")
    try:
        if getattr(args, "in_task", None):
            get_task(args.in_task)
        else:
            check_clusters(args.held_out_cluster, args.train_clusters)
    except ValueError as err:  # unknown task or cluster, or held-out cluster also trained on
        parser.error(str(err))


def stage_from_args(args: argparse.Namespace):
    if getattr(args, "in_task", None):
        return build_in_task_data(
            args.in_task, resolve_data_dir(args.data_dir), args.seed, args.pool_per_task,
            args.queries_per_task, args.n_candidates, args.eval_per_task, args.max_prompt_chars)
    return build_stage_data(
        held_out_cluster=args.held_out_cluster,
        data_dir=resolve_data_dir(args.data_dir),
        train_clusters=args.train_clusters,
        seed=args.seed,
        pool_per_task=args.pool_per_task,
        queries_per_task=args.queries_per_task,
        n_candidates=args.n_candidates,
        eval_per_task=args.eval_per_task,
        carve_fraction=args.carve_fraction,
        max_prompt_chars=args.max_prompt_chars,
    )


def data_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="uprise data", description=__doc__)
    parser.add_argument("--output-dir", help="where to write the stage files")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--list", action="store_true", help="list tasks and clusters, then exit")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    if args.list:
        for t in sorted(all_tasks(), key=lambda t: (t.cluster, t.name)):
            print(f"{t.cluster:22s} {t.name:14s} {t.kind:10s} {t.metric:12s} "
                  f"{t.hf_path}/{t.hf_config or ''} eval={t.eval_split}")
        return
    if not args.output_dir:
        parser.error("--output-dir is required (unless --list)")
    check_data_arguments(parser, args)
    out = prepare_output_dir(args.output_dir, args.overwrite)
    stage = stage_from_args(args)
    stage.manifest["run_info"] = run_info()
    write_stage_data(stage, out)
    log.info("wrote %s: %s", out, stage.manifest["counts"])
    print(f"wrote {out}: {stage.manifest['counts']}")
