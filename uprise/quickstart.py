"""`uprise quickstart`: every stage end to end on the embedded models, with a report.

data -> score -> train -> export + index -> untrained baseline export + index -> evaluate
(zero-shot, random, untrained retriever, trained retriever; same LM, same examples).
Each stage writes its files under --output-dir and is skipped on `--resume` when its
completion marker exists, so an interrupted quickstart goes on where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from flan_data import (
    build_stage_data,
    prepare_output_dir,
    read_stage_data,
    resolve_data_dir,
    write_json,
    write_stage_data,
)
from flan_data.provenance import run_info

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


@dataclass(frozen=True)
class QuickstartConfig:
    held_out_cluster: str = "closed_book_qa"
    train_clusters: tuple[str, ...] | None = (
        "sentiment", "nli", "paraphrase", "commonsense", "coreference")
    data_dir: str | None = None
    seed: int = 42
    pool_per_task: int | None = 300
    queries_per_task: int | None = 60
    n_candidates: int = 10
    eval_per_task: int | None = 200
    max_prompt_chars: int | None = 600
    lm: str = "embedded:smollm2-135m-instruct"
    lm_dtype: str = "auto"
    score_batch_size: int = 16
    encoder: str = "embedded:all-MiniLM-L6-v2"
    epochs: int = 3
    train_batch_size: int = 8
    n_hard_negatives: int = 3
    n_random_negatives: int = 0
    label_copy_correction: bool = False
    drop_chance_tasks: bool = False
    loss: str = "info_nce"
    lm_temperature: float = 0.1
    lr: float = 3e-5
    k: int = 3
    eval_batch_size: int = 16

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> QuickstartConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; expected keys {sorted(known)}.")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        if raw.get("train_clusters") is not None:
            raw["train_clusters"] = tuple(raw["train_clusters"])
        return cls(**raw)


def check_resumable(cfg: QuickstartConfig, out: Path) -> None:
    """A resumed run must use the config it started with; otherwise its files would mix."""
    saved = out / "quickstart_config.json"
    if not saved.is_file():
        return
    before = json.loads(saved.read_text())["config"]
    now = json.loads(json.dumps(dataclasses.asdict(cfg)))
    changed = sorted(k for k in now if before.get(k) != now[k])
    if changed:
        raise ValueError(
            f"{saved}: cannot resume with a different config (changed: {changed}). "
            "Resume with the same options, or use a new --output-dir (or --overwrite)."
        )


def run_quickstart(
    cfg: QuickstartConfig, out: Path, resume: bool = False, progress: bool = True
) -> dict:
    """Runs every stage under `out` (skipping complete ones when `resume`); returns the report."""
    from proxy_lm import load_lm
    from uprise.stages import evaluate_stage, index_stage, score_stage, train_stage

    if resume:
        check_resumable(cfg, out)
    else:
        for stale in ("data", "scores", "train", "retriever", "untrained_retriever"):
            if (out / stale).exists():
                shutil.rmtree(out / stale)
    timings: dict[str, float] = {}
    write_json(out / "quickstart_config.json", {"config": dataclasses.asdict(cfg), **run_info()})

    t = time.perf_counter()
    if not (out / "data" / "data_manifest.json").is_file():
        stage = build_stage_data(
            cfg.held_out_cluster, resolve_data_dir(cfg.data_dir),
            list(cfg.train_clusters) if cfg.train_clusters else None, cfg.seed,
            cfg.pool_per_task, cfg.queries_per_task, cfg.n_candidates, cfg.eval_per_task,
            max_prompt_chars=cfg.max_prompt_chars,
        )
        write_stage_data(stage, out / "data")
    stage = read_stage_data(out / "data")
    timings["data"] = time.perf_counter() - t

    lm = load_lm(cfg.lm, dtype=cfg.lm_dtype)
    t = time.perf_counter()
    score_stage(lm, stage, out / "scores", cfg.score_batch_size, progress)
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    train_stage(cfg, out, progress)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    index_stage(cfg, out)
    timings["index"] = time.perf_counter() - t

    t = time.perf_counter()
    report = evaluate_stage(cfg, lm, stage, out, progress)
    timings["eval"] = time.perf_counter() - t
    report["timings_s"] = timings
    write_json(out / "report.json", report)
    return report


def quickstart_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="uprise quickstart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="runs/quickstart")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty dir")
    parser.add_argument("--resume", action="store_true", help="skip stages already complete")
    parser.add_argument("--held-out-cluster")
    parser.add_argument("--data-dir")
    parser.add_argument("--lm")
    parser.add_argument("--encoder")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--eval-per-task", type=int)
    parser.add_argument("--queries-per-task", type=int)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = QuickstartConfig.from_yaml(
        args.config, held_out_cluster=args.held_out_cluster, data_dir=args.data_dir, lm=args.lm,
        encoder=args.encoder, seed=args.seed, eval_per_task=args.eval_per_task,
        queries_per_task=args.queries_per_task,
    )
    out = Path(args.output_dir)
    if not args.resume:
        prepare_output_dir(out, args.overwrite)
    start = time.perf_counter()
    report = run_quickstart(cfg, out, resume=args.resume, progress=not args.no_progress)
    from uprise.evaluation import format_table

    print(format_table(report))
    print(f"\nwall time {time.perf_counter() - start:.0f} s; report: {out / 'report.json'}")
