"""`uprise eval`: zero-shot, random, untrained and trained retrieval on held-out queries."""

from __future__ import annotations

import argparse
from pathlib import Path

from flan_data import prepare_output_dir, read_stage_data, write_json, write_jsonl
from flan_data.provenance import run_info

METHODS = ("zero_shot", "random", "untrained", "trained")


def eval_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="uprise eval", description=__doc__)
    parser.add_argument("--data", required=True, help="folder written by `uprise data`")
    parser.add_argument("--retriever", help="trained retriever export (for the 'trained' method)")
    parser.add_argument("--baseline-retriever",
                        help="untrained export; default: built from --encoder into the output dir")
    parser.add_argument("--encoder", default="embedded:all-MiniLM-L6-v2")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--lm", default="embedded:smollm2-135m-instruct",
                        help="evaluated LM: any HF causal LM id or path")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if "trained" in args.methods and not args.retriever:
        parser.error("--retriever is required for the 'trained' method (or drop it from --methods)")

    from proxy_lm import load_lm
    from uprise.evaluation import evaluate_methods, format_table
    from uprise.stages import build_methods

    out = prepare_output_dir(args.output_dir, args.overwrite)
    stage = read_stage_data(args.data)
    methods = build_methods(
        args.methods, stage.pool, Path(args.data) / "pool.jsonl", args.k, args.seed,
        trained_dir=args.retriever, untrained_dir=args.baseline_retriever,
        encoder=args.encoder, work_dir=out,
    )
    lm = load_lm(args.lm, dtype=args.dtype)
    report, predictions = evaluate_methods(lm, stage.eval_queries, methods, args.batch_size,
                                           progress=not args.no_progress)
    report["config"] = {**vars(args), "lm_name": lm.name, "data_manifest": stage.manifest}
    report["run_info"] = run_info()
    for name, rows in predictions.items():
        write_jsonl(out / "predictions" / f"{name}.jsonl", rows)
    write_json(out / "report.json", report)
    print(format_table(report))
