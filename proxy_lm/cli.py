"""`uprise score`: score every (prompt, query) candidate pair of a data stage with the proxy LM."""

from __future__ import annotations

import argparse
from pathlib import Path

from flan_data import read_stage_data
from proxy_lm.loading import EMBEDDED_LM, load_lm
from proxy_lm.scoring import score_candidates


def score_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="uprise score", description=__doc__)
    parser.add_argument("--data", required=True, help="folder written by `uprise data`")
    parser.add_argument("--output-dir", required=True,
                        help="score shards + manifest; rerun the same command to resume")
    parser.add_argument("--lm", default=EMBEDDED_LM, help="HF causal LM id or path")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16",
                                                             "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    stage = read_stage_data(args.data)
    lm = load_lm(args.lm, dtype=args.dtype, device=args.device)
    scores = score_candidates(
        lm,
        queries={q.id: q for q in stage.train_queries},
        prompts={p.id: p for p in stage.pool},
        candidates=stage.candidates,
        out_dir=Path(args.output_dir),
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print(f"scored {len(scores)} pairs with {lm.name} -> {args.output_dir}")
