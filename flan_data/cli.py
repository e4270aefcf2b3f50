"""`uprise data`: build the pool, training queries, candidates and evaluation queries.

Contract: the protocol options are `flan_data.settings.DataSettings`'s; out-of-range counts and
unknown task or cluster names are refused (exit status 2, naming the option and the value)
before the output folder is created.
"""

from __future__ import annotations

import argparse
import logging

from flan_data.catalogue import all_tasks
from flan_data.loading import resolve_data_dir
from flan_data.provenance import run_info
from flan_data.schema import prepare_output_dir
from flan_data.settings import DataSettings, add_arguments
from flan_data.stage_io import write_stage_data

log = logging.getLogger(__name__)


def data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uprise data", description=__doc__)
    parser.add_argument("--output-dir", help="where to write the stage files")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--list", action="store_true", help="list tasks and clusters, then exit")
    parser.add_argument("--data-dir", default=None,
                        help="offline mirror folder; default ../shared/data if present, else "
                             "the Hub; 'hub' forces the Hub")
    add_arguments(parser)
    return parser


def data_main(argv: list[str] | None = None) -> None:
    parser = data_parser()
    args = parser.parse_args(argv)
    if args.list:
        for t in sorted(all_tasks(), key=lambda t: (t.cluster, t.name)):
            print(f"{t.cluster:22s} {t.name:14s} {t.kind:10s} {t.metric:12s} "
                  f"{t.hf_path}/{t.hf_config or ''} eval={t.eval_split}")
        return
    if not args.output_dir:
        parser.error("--output-dir is required (unless --list)")
    settings = DataSettings.from_args(args)
    try:
        settings.check()
    except ValueError as err:  # a bad count, an unknown task or cluster, a cluster twice
        parser.error(str(err))
    out = prepare_output_dir(args.output_dir, args.overwrite)
    stage = settings.build(resolve_data_dir(args.data_dir))
    stage.manifest["run_info"] = run_info()
    write_stage_data(stage, out)
    log.info("wrote %s: %s", out, stage.manifest["counts"])
    print(f"wrote {out}: {stage.manifest['counts']}")
