"""The quickstart's stages after `data`, each skipping its work when its output is complete.

Contract: a stage reads the previous stage's folder under the run directory and writes its
own; a stage's completion marker is the file its writer renames into place last
(scores/score_manifest.json, or its legacy name manifest.json, with every shard complete;
retriever/manifest.json of the current index format version; report.json). Inside the
evaluation stage, the prediction cache (`uprise.evaluation.prediction_cache`) keeps each
finished method's answers, so a run killed there resumes after the methods it finished.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flan_data import StageData
from flan_data.provenance import run_info
from flan_data.stage_io import POOL, TRAIN_QUERIES
from retriever.settings import TrainSettings
from uprise.evaluation import (
    LocalLM,
    MethodName,
    build_methods,
    cached_predictor,
    evaluate_methods,
    write_predictions,
    write_report_files,
)
from uprise.evaluation.prediction_cache import cache_summary

log = logging.getLogger(__name__)
QUICKSTART_METHODS: tuple[MethodName, ...] = ("zero_shot", "random", "untrained", "trained")


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


def train_stage(settings: TrainSettings, out: Path, metadata: dict[str, Any],
                progress: bool) -> Path:
    """Fits the bi-encoder on out/scores and exports it to out/retriever (skipped when that
    export exists); `metadata` is recorded in the export."""
    from retriever import train_retriever

    export_dir = out / "retriever"
    if (export_dir / "uprise_config.json").is_file():
        log.info("train: %s exists, skipping", export_dir)
        return export_dir
    return train_retriever(out / "scores", out / "data" / TRAIN_QUERIES, out / "data" / POOL,
                           out / "train", export_dir, settings, metadata, progress=progress)


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


def index_stage(encoder: str, out: Path, metadata: dict[str, Any]) -> None:
    """Indexes out/data's pool behind out/retriever, and builds the untrained baseline from
    `encoder` in out/untrained_retriever (each skipped when already indexed)."""
    from retriever import index_pool
    from retriever.index_manifest import is_indexed

    pool_path = out / "data" / POOL
    if not is_indexed(out / "retriever"):
        index_pool(out / "retriever", pool_path)
    build_untrained_retriever(encoder, pool_path, out / "untrained_retriever", metadata)


def evaluate_stage(lm: Any, stage: StageData, out: Path, k: int, seed: int, batch_size: int,
                   progress: bool, extra: dict[str, Any] | None = None) -> dict:
    """The quickstart's evaluation: `QUICKSTART_METHODS` and the `extra` methods by name (the
    mined rounds' retrievers, `uprise.rounds.round_methods`) with `k` prompts, the local `lm` on
    the stage's evaluation queries; writes predictions, report.md and report.png (the caller
    writes report.json)."""
    methods = build_methods(list(QUICKSTART_METHODS), stage.pool, k, seed, out / "retriever",
                            out / "untrained_retriever")
    methods.update(extra or {})
    answering = cached_predictor(LocalLM(lm))  # an interrupted evaluation resumes its answers
    report, predictions = evaluate_methods(answering, stage.eval_queries, methods, batch_size,
                                           progress=progress, seed=seed)
    write_predictions(predictions, out)
    report["config"] = {"k": k, "lm": lm.name, "data_manifest": stage.manifest}
    report["prediction_cache"] = cache_summary(answering)
    report["run_info"] = run_info()
    write_report_files(report, out, title=f"held-out cluster {stage.manifest['held_out_cluster']}")
    return report
