"""`uprise score`: score every (prompt, query) candidate pair of a data stage with the proxy LM.

The same command runs on one CPU, N GPUs (`--devices N`) or several nodes (`--num-nodes M`,
started by your cluster launcher, e.g. SLURM's srun or torchrun) through Lightning; rerun it
to resume. Scores already in the persistent score cache are not recomputed. Options are
checked and the data folder read before the output folder is made; the run then holds the
folder's lock (`proxy_lm.shards.score_folder_lock`), so a second run on it fails at once.
When every pair is scored, the global-zero process adds each query's zero-shot score
(`proxy_lm.scoring.score_zero_shot`); rerunning on a folder that lacks it adds only that.
"""

from __future__ import annotations

import argparse
import os
from contextlib import nullcontext
from pathlib import Path

from flan_data import StageData, read_stage_data
from flan_data.score_folder import read_scores
from proxy_lm.distributed import score_candidates_distributed
from proxy_lm.loading import EMBEDDED_LM, load_lm
from proxy_lm.scoring import score_zero_shot
from proxy_lm.shards import score_folder_lock


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uprise score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder written by `uprise data`")
    parser.add_argument("--output-dir", required=True,
                        help="score shards + manifest; rerun the same command to resume")
    parser.add_argument("--lm", default=EMBEDDED_LM, help="HF causal LM id or path")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16",
                                                             "float16"])
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator: cpu, gpu…")
    parser.add_argument("--devices", type=_devices, default=1, help="devices per node, or 'auto'")
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--strategy", default="auto", help="default: ddp when more than 1 device")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    parser.add_argument("--shard-size", type=int, default=256, help="pairs per resumable shard")
    parser.add_argument("--score-cache", default=None,
                        help="score cache root (default $UPRISE_SCORE_CACHE or "
                             "$UPRISE_CACHE/scores)")
    parser.add_argument("--no-score-cache", action="store_true", help="compute every pair")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def score_main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    for flag, value in (("--batch-size", args.batch_size), ("--shard-size", args.shard_size),
                        ("--num-nodes", args.num_nodes)):
        if value < 1:
            parser.error(f"{flag} {value}: expected a positive integer")
    if isinstance(args.devices, int) and args.devices < 1:
        parser.error(f"--devices {args.devices}: expected a positive integer or 'auto'")
    stage = read_stage_data(args.data)
    lock = score_folder_lock(args.output_dir) if _launcher_rank() == 0 else nullcontext()
    with lock:
        _score(args, stage)


def _launcher_rank() -> int:
    """This process's rank as a launcher (torchrun, SLURM, Lightning's DDP) sets it; 0 when
    none does. Only the global-zero process takes the folder's lock: the others run within it."""
    ranks = [os.environ.get(name, "0") for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK",
                                                    "NODE_RANK", "GROUP_RANK")]
    return max(int(r) if r.isdigit() else 0 for r in ranks)


def _score(args: argparse.Namespace, stage: StageData) -> None:
    lm = load_lm(args.lm, dtype=args.dtype, device=_dtype_device(args.accelerator))
    queries = {q.id: q for q in stage.train_queries}
    cache = False if args.no_score_cache else (args.score_cache or True)
    zero = score_candidates_distributed(
        lm,
        queries=queries,
        prompts={p.id: p for p in stage.pool},
        candidates=stage.candidates,
        out_dir=Path(args.output_dir),
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        progress=not args.no_progress,
        score_cache=cache,
    )
    if zero:
        score_zero_shot(lm, {c.query_id: queries[c.query_id] for c in stage.candidates},
                        args.output_dir, args.batch_size, cache)
        n = len(read_scores(args.output_dir))
        print(f"scored {n} pairs with {lm.name} -> {args.output_dir}")


def _dtype_device(accelerator: str) -> str:
    """The device kind `--dtype auto` is resolved for (the LM is moved by Lightning)."""
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"
