"""Benchmark: how far does the training seed alone move a held-out ranking result?

    .venv/bin/python bench/train_seeds.py --cluster-dir RUN/cache/struct_to_text --seeds 43 \
        --out bench/results/train_seeds_struct_to_text.json

Retrains round 1 and every mined round of a finished `uprise eval --clusters` folder on their own
data and LM scores (nothing re-mined, nothing re-scored) with each other training seed: the
folder's config otherwise (`QuickstartConfig.train_settings` with `seed` replaced; the seed also
redraws which training queries are held out for validation and the export chosen on them).
Exports go to CLUSTER_DIR/train_seeds/<method>/seed<s>/ (resumable: an export found is reused),
and every export is judged on the folder's ranking section against the untrained encoder
(`judge_rankers`: NDCG@3, top-1 agreement, Spearman per held-out query, paired bootstrap 95% CIs
stratified by task), beside the folder's own exports. Prints a table, writes JSON. Each
retraining costs what the folder's training did (about 8 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import write_json  # noqa: E402
from uprise.evaluation.ranking import dense_ranker, judge_rankers  # noqa: E402
from uprise.evaluation.stats import format_diff  # noqa: E402
from uprise.quickstart import RUN_CONFIG, QuickstartConfig  # noqa: E402
from uprise.rounds import round_method  # noqa: E402
from uprise.stages import train_stage  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from ranking_ceiling import add_section_arguments, section  # noqa: E402  (bench/, put on sys.path above)
from round_ranking import METRICS, folder_rankers, mined_rounds  # noqa: E402

SEEDS_DIR = "train_seeds"


def seed_name(method: str, seed: int) -> str:
    return f"{method}_seed{seed}"


def seed_folder(cluster_dir: Path, round_dir: Path, method: str, seed: int) -> Path:
    """CLUSTER_DIR/train_seeds/<method>/seed<s>/, its data/ and scores/ linked to the round's."""
    out = cluster_dir / SEEDS_DIR / method / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("data", "scores"):
        if not (out / name).exists():
            (out / name).symlink_to((round_dir / name).resolve(), target_is_directory=True)
    return out


def retrain(cluster_dir: Path, seeds: list[int], max_round: int | None = None,
            progress: bool = False) -> dict[str, Path]:
    """{'<method>_seed<s>': export} for round 1 and every mined round up to `max_round` (all
    when None), each seed (trained when its export is missing)."""
    cfg = QuickstartConfig(**json.loads((cluster_dir / RUN_CONFIG).read_text())["config"])
    if cfg.seed in seeds:
        raise SystemExit(f"--seeds: {cfg.seed} is the folder's own seed ({cluster_dir}); "
                         "its exports are judged already, give other seeds")
    mined = mined_rounds(cluster_dir, required=False)
    rounds = {1: cluster_dir, **{r: path.parent for r, path in mined.items()}}
    rounds = {r: d for r, d in rounds.items() if max_round is None or r <= max_round}
    exports = {}
    for r, round_dir in rounds.items():
        for seed in seeds:
            out = seed_folder(cluster_dir, round_dir, round_method(r), seed)
            metadata = {**cfg.export_metadata(), "train_seed": seed,
                        **({"mining_round": r} if r > 1 else {})}
            exports[seed_name(round_method(r), seed)] = train_stage(
                dataclasses.replace(cfg, seed=seed).train_settings(), out, metadata, progress)
    return exports


def measure(cluster_dir: Path, seeds: list[int], max_round: int | None = None,
            tag: str | None = None, seed: int = 42, progress: bool = False,
            eval_seed: int | None = None) -> dict:
    got = section(cluster_dir, tag, eval_seed)
    exports = retrain(cluster_dir, seeds, max_round, progress)
    rankers = folder_rankers(cluster_dir, mined_rounds(cluster_dir, required=False), seed)
    rankers.update({name: dense_ranker(path) for name, path in exports.items()})
    relevance = got.relevance(rankers)
    tasks = [q.task for q in got.queries]
    return {"cluster_dir": str(cluster_dir), "ranking_folder": got.folder.name,
            "held_out_cluster": got.held_out, "n_queries": len(got.queries),
            "n_prompts": len(got.prompts), "lm": got.records[0].lm,
            "folder_seed": got.config["seed"], "train_seeds": seeds, "max_round": max_round,
            "against": {"untrained": judge_rankers(relevance, got.scores, tasks, "untrained",
                                                   seed)}}


def table(result: dict) -> str:
    """One row per ranker: each metric's mean and its difference from the untrained encoder."""
    base = result["against"]["untrained"]
    lines = [f"{result['held_out_cluster']} ({result['lm']}): {result['n_queries']} queries x "
             f"{result['n_prompts']} prompts; folder seed {result['folder_seed']}, training "
             f"seeds {result['train_seeds']}",
             f"{'ranker':18} " + "  ".join(f"{m:>30}" for m in METRICS)]
    for name, row in base.items():
        cells = []
        for m in METRICS:
            d = row[m].get("vs_untrained")
            cells.append(f"{row[m]['mean']:.3f}" + (
                f" ({format_diff(d, scale=1, digits=3)})" if d else ""))
        lines.append(f"{name:18} " + "  ".join(f"{c:>30}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_section_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", required=True,
                        help="training seeds other than the folder's own")
    parser.add_argument("--max-round", type=int,
                        help="retrain rounds 1..N only (default: every round of the folder)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = measure(args.cluster_dir, args.seeds, args.max_round, args.tag, args.seed,
                     eval_seed=args.eval_seed)
    print(table(result))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
