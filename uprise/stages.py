"""The quickstart's stages after `data`, each skipping its work when its output is complete.

Contract: a stage reads the previous stage's folder under the run directory and writes its
own; a stage's completion marker is the file its writer renames into place last
(scores/score_manifest.json, or its legacy name manifest.json, with every shard complete;
retriever/manifest.json of the current index format version; report.json).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flan_data import StageData, write_jsonl
from flan_data.provenance import run_info
from flan_data.stage_io import POOL, TRAIN_QUERIES
from uprise.evaluation import LocalLM, build_methods, evaluate_methods, write_report_files

log = logging.getLogger(__name__)


def score_stage(lm: Any, stage: StageData, out_dir: Path, batch_size: int, progress: bool):
    """Scores the stage's candidates into `out_dir`, holding the folder's lock (a second
    quickstart or `uprise score` on the same folder stops at once)."""
    from proxy_lm import score_candidates
    from proxy_lm.shards import score_folder_lock

    with score_folder_lock(out_dir):
        return score_candidates(
            lm,
            queries={q.id: q for q in stage.train_queries},
            prompts={p.id: p for p in stage.pool},
            candidates=stage.candidates,
            out_dir=out_dir,
            batch_size=batch_size,
            progress=progress,
        )


def _metadata(cfg: Any) -> dict[str, Any]:
    return {
        "scoring_lm": cfg.lm,
        "held_out_cluster": cfg.held_out_cluster,
        "train_clusters": list(cfg.train_clusters or []),
        "data_dir": cfg.data_dir,
        "seed": cfg.seed,
    }


def train_stage(cfg: Any, out: Path, progress: bool) -> Path:
    """Fits the bi-encoder on the scores and exports it to out/retriever."""
    from retriever import train_retriever

    export_dir = out / "retriever"
    if (export_dir / "uprise_config.json").is_file():
        log.info("train: %s exists, skipping", export_dir)
        return export_dir
    return train_retriever(
        scores_path=out / "scores",
        queries_path=out / "data" / TRAIN_QUERIES,
        pool_path=out / "data" / POOL,
        out_dir=out / "train",
        export_dir=export_dir,
        encoder=cfg.encoder,
        epochs=cfg.epochs,
        batch_size=cfg.train_batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        n_hard_negatives=cfg.n_hard_negatives,
        n_random_negatives=cfg.n_random_negatives,
        label_copy_correction=cfg.label_copy_correction,
        drop_chance_tasks=cfg.drop_chance_tasks,
        loss=cfg.loss,
        lm_temperature=cfg.lm_temperature,
        metadata=_metadata(cfg),
        progress=progress,
    )


def build_untrained_retriever(encoder: str, pool_path: Path, out_dir: Path,
                              metadata: dict[str, Any]) -> Path:
    """The untrained baseline: the same export and index code path on fresh towers."""
    from retriever import BiEncoder, BiEncoderConfig, export_retriever, index_pool
    from retriever.index_manifest import is_indexed

    if not is_indexed(out_dir):
        export_retriever(BiEncoder(BiEncoderConfig(base_model=encoder)), out_dir,
                         {**metadata, "trained": False}, overwrite=True)
        index_pool(out_dir, pool_path)
    return out_dir


def index_stage(cfg: Any, out: Path) -> None:
    from retriever import index_pool
    from retriever.index_manifest import is_indexed

    pool_path = out / "data" / POOL
    if not is_indexed(out / "retriever"):
        index_pool(out / "retriever", pool_path)
    build_untrained_retriever(cfg.encoder, pool_path, out / "untrained_retriever", _metadata(cfg))


def evaluate_stage(cfg: Any, lm: Any, stage: StageData, out: Path, progress: bool) -> dict:
    """The quickstart's evaluation: the four methods below; writes predictions, report.md and
    report.png (the caller writes report.json)."""
    methods = build_methods(["zero_shot", "random", "untrained", "trained"], stage.pool, cfg.k,
                            cfg.seed, out / "retriever", out / "untrained_retriever")
    report, predictions = evaluate_methods(LocalLM(lm), stage.eval_queries, methods,
                                           cfg.eval_batch_size, progress=progress, seed=cfg.seed)
    for name, rows in predictions.items():
        write_jsonl(out / "predictions" / f"{name}.jsonl", rows)
    report["config"] = {"k": cfg.k, "lm": lm.name, "data_manifest": stage.manifest}
    report["run_info"] = run_info()
    write_report_files(report, out, title=f"held-out cluster {cfg.held_out_cluster}")
    return report
