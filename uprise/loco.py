"""Leave-one-cluster-out evaluation: one retriever per held-out cluster, every method compared.

Contract: for each held-out cluster C, `prepare_cluster` builds (or reuses) under `work_dir/C/`
the quickstart's stages with C held out: data (pool, training queries and candidates from the
other clusters only), scores (the scoring LM), the trained retriever, the untrained baseline and
(with `mining_rounds > 1`) the mined rounds (`uprise.rounds`), each skipped when its completion
marker exists; a cluster directory built with another config is refused. `evaluate_cluster`
evaluates the evaluation LM on C's evaluation queries (test split where labelled, else
validation: `flan_data.evaluation_queries`) with every method (each mined round's retriever as
`trained_r<r>` when `trained` is among them; `hybrid` mixes the first round's with BM25, its
weight chosen on that retriever's validation queries unless given), after checking that no pool
or index prompt comes from C, and (with `abstain`) a threshold calibrated on the training
clusters' unused validation queries. The ranking section judges the hybrid too, named or not,
whenever its weight is given or can be chosen, and every mined round whether or not `trained` is
evaluated downstream.
`run_loco` does both for each cluster and returns the multi-cluster report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flan_data import (
    StageData,
    all_tasks,
    check_no_leakage,
    evaluation_queries,
    read_stage_data,
    resolve_data_dir,
    tasks_in,
    write_json,
    write_stage_data,
)
from flan_data.loading import available_splits
from flan_data.score_folder import ZERO_SHOT_FILE, is_complete
from flan_data.stage_io import DATA_MANIFEST
from retriever import INDEX_MANIFEST
from uprise.evaluation import (
    ABSTAIN,
    DEFAULT_METHODS,
    REPORT_FILE,
    MethodName,
    Predictor,
    build_methods,
    check_pool_leakage,
    evaluate_methods,
    json_safe,
    write_predictions,
    write_report_files,
)
from uprise.evaluation.abstain import (
    abstain_effect,
    applied_thresholds,
    calibrate,
    calibration_queries,
)
from uprise.evaluation.hybrid import chosen_weight
from uprise.evaluation.methods import HYBRID
from uprise.evaluation.ranking import dense_ranker, ranking_section, standard_rankers
from uprise.evaluation.report import summary
from uprise.quickstart import RUN_CONFIG, QuickstartConfig, check_resumable
from uprise.rounds import check_rounds, mining_stages, round_dirs, round_method, round_methods
from uprise.stages import index_stage, score_stage, train_stage

log = logging.getLogger(__name__)
LOCO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "loco.yaml"  # default stage sizes


@dataclass(frozen=True)
class EvalSettings:
    """How each held-out cluster is evaluated (the same for every cluster)."""

    methods: tuple[MethodName, ...] = DEFAULT_METHODS
    k: int = 3
    seed: int = 42
    batch_size: int = 16
    abstain: bool = False
    calibration_per_task: int | None = 10
    eval_per_task: int | None = 200
    """Held-out evaluation examples per task (a seeded sample; None: all)."""
    eval_seed: int | None = None
    """Seed of that sample and of each evaluation row's template; None: the stage config's seed.
    Fixed across training-seed replicates, they evaluate the same rows in the same wording."""
    tasks: tuple[str, ...] | None = None
    """Evaluate only these tasks of the held-out cluster (e.g. a user's task); None: all."""
    progress: bool = True
    ranking_per_task: int = 0
    """Held-out queries per task for the ranking section (`uprise.evaluation.ranking`); 0: none."""
    ranking_prompts: int = 20
    """Shared pool prompts every ranking query is scored with."""
    ranking_seed: int | None = None
    """Seed of the ranking section's query and prompt samples; None: `seed`. Another value draws
    a fresh section of the same folder with nothing retrained."""
    abstain_by: Literal["all", "kind"] = "all"
    """'all': one abstention threshold for every query; 'kind': one per answer kind (choice,
    generation), each calibrated on the training clusters' validation queries of that kind."""
    hybrid_weight: float | None = None
    """The hybrid method's weight (`serve.hybrid`); None: chosen on each cluster's trained
    retriever's validation queries (`uprise.evaluation.hybrid`)."""


def available_clusters(data_dir: Path | None) -> list[str]:
    """The catalogue's clusters with at least one task whose evaluation split is present."""
    return [c for c in builtin_clusters()
            if any(t.eval_split in available_splits(t, data_dir) for t in tasks_in(c))]


def builtin_clusters() -> list[str]:
    """The catalogue's own clusters (not those only user task files brought in)."""
    return sorted({t.cluster for t in all_tasks() if not t.hf_path.startswith("custom:")})


def cluster_config(base: QuickstartConfig, cluster: str,
                   train_clusters: list[str] | None) -> QuickstartConfig:
    """`base` with `cluster` held out and every other (or every given) built-in cluster
    trained on. Evaluation-only fields are reset to fixed values (the held-out queries are
    drawn at evaluation time), so runs that differ only in how they evaluate share the stages."""
    pool = train_clusters or builtin_clusters()
    defaults = QuickstartConfig()
    return dataclasses.replace(base, held_out_cluster=cluster,
                               train_clusters=tuple(c for c in pool if c != cluster),
                               eval_per_task=0, k=defaults.k,
                               eval_batch_size=defaults.eval_batch_size)


def prepare_cluster(cfg: QuickstartConfig, cluster_dir: Path,
                    scoring_lm: Callable[[], Any], progress: bool) -> StageData:
    """Data, scores, trained + untrained retrievers for one held-out cluster (cached)."""
    cluster_dir.mkdir(parents=True, exist_ok=True)
    check_resumable(cfg, cluster_dir)
    check_rounds(cfg, cluster_dir)
    write_json(cluster_dir / RUN_CONFIG, {"config": dataclasses.asdict(cfg)})
    if not (cluster_dir / "data" / DATA_MANIFEST).is_file():
        stage = cfg.data_settings().build(resolve_data_dir(cfg.data_dir))
        write_stage_data(stage, cluster_dir / "data")
    stage = read_stage_data(cluster_dir / "data")
    scores = cluster_dir / "scores"
    if not is_complete(scores) or not (scores / ZERO_SHOT_FILE).is_file():  # older folders
        score_stage(scoring_lm(), stage, scores, cfg.score_batch_size, progress)
    train_stage(cfg.train_settings(), cluster_dir, cfg.export_metadata(), progress)
    index_stage(cfg.encoder, cluster_dir, cfg.export_metadata())
    mining_stages(cfg, cluster_dir, scoring_lm, cfg.export_metadata(), progress)
    return stage


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


def calibrated_threshold(lm: Predictor, stage: StageData, cluster_dir: Path, data_dir: Path | None,
                         settings: EvalSettings) -> dict[str, Any]:
    """The abstention threshold for this cluster's trained retriever and this LM (cached)."""
    path = cluster_dir / "abstain" / f"{_slug(lm.name)}-k{settings.k}.json"
    # "thresholds": files from before the per-kind thresholds lack it, so they are recomputed
    key = {"per_task": settings.calibration_per_task, "seed": settings.seed,
           "hits": "other_clusters", "lm": lm.name, "k": settings.k, "thresholds": "by_kind",
           "retriever_mtime_ns": (cluster_dir / "retriever" / INDEX_MANIFEST).stat().st_mtime_ns}
    if path.is_file():
        cached = json.loads(path.read_text())
        if all(cached.get(name) == value for name, value in key.items()):
            return cached
    queries = calibration_queries(stage, data_dir, settings.seed, settings.calibration_per_task)
    result = calibrate(lm, str(cluster_dir / "retriever"), queries, settings.k,
                       settings.batch_size, settings.progress)
    result.update(key)
    write_json(path, json_safe(result))
    return result


def hybrid_choice(cluster_dir: Path, settings: EvalSettings, named: bool,
                  ) -> dict[str, Any] | None:
    """The hybrid's weight for the cluster (`uprise.evaluation.hybrid.chosen_weight`). When the
    method is not `named` (only the ranking section wants it), a retriever whose validation
    queries cannot be re-derived leaves it out with a warning instead of failing the run."""
    try:
        return chosen_weight(cluster_dir / "retriever", settings.hybrid_weight, settings.seed)
    except (ValueError, KeyError, FileNotFoundError) as e:
        if named:
            raise
        log.warning("%s: the ranking section goes without the hybrid: %s", cluster_dir, e)
        return None


def evaluate_cluster(lm: Predictor, cfg: QuickstartConfig, cluster_dir: Path, stage: StageData,
                     settings: EvalSettings, scoring_lm: Callable[[], Any] | None = None,
                     ) -> tuple[dict[str, Any], dict[str, list]]:
    """Every method on the held-out cluster's evaluation queries (see the module docstring);
    with `settings.ranking_per_task`, also the ranking section judged by `scoring_lm()`."""
    data_dir = resolve_data_dir(cfg.data_dir)
    eval_seed = cfg.seed if settings.eval_seed is None else settings.eval_seed
    queries = evaluation_queries(cfg.held_out_cluster, data_dir, eval_seed, settings.eval_per_task)
    if settings.tasks is not None:
        queries = [q for q in queries if q.task in settings.tasks]
    check_no_leakage(cfg.held_out_cluster, stage.pool, stage.train_queries, stage.candidates)
    rounds = round_dirs(cluster_dir, cfg.mining_rounds)
    check_pool_leakage(queries, stage.pool,
                       [cluster_dir / "retriever", cluster_dir / "untrained_retriever",
                        *(folder / "retriever" for folder in rounds.values())])
    names = list(settings.methods)
    calibration = None
    if settings.abstain:
        calibration = {**calibrated_threshold(lm, stage, cluster_dir, data_dir, settings),
                       "abstain_by": settings.abstain_by}
        names.append(ABSTAIN)
    threshold, by_kind = applied_thresholds(calibration) if calibration else (None, None)
    ranking = bool(settings.ranking_per_task and scoring_lm is not None)
    hybrid = hybrid_choice(cluster_dir, settings, HYBRID in names) if (
        HYBRID in names or ranking) else None
    methods = build_methods(
        names, stage.pool, settings.k, settings.seed, cluster_dir / "retriever",
        cluster_dir / "untrained_retriever", abstain_threshold=threshold,
        abstain_by_kind=by_kind, hybrid_weight=hybrid["weight"] if hybrid else None)
    if "trained" in names:  # rounds are evaluated downstream with round 1, not without it
        methods.update(round_methods(rounds, settings.k))
    report, predictions = evaluate_methods(lm, queries, methods, settings.batch_size,
                                           progress=settings.progress, seed=settings.seed)
    report["data_manifest"] = stage.manifest
    report["eval_seed"] = eval_seed
    if calibration:
        report["abstain_calibration"] = calibration
    if hybrid:
        report["hybrid"] = hybrid
    if ranking:
        rankers = standard_rankers(cluster_dir / "retriever", cluster_dir / "untrained_retriever",
                                   settings.seed, hybrid["weight"] if hybrid else None)
        rankers.update({round_method(r): dense_ranker(folder / "retriever")
                        for r, folder in rounds.items()})
        report["ranking"] = ranking_section(
            scoring_lm(), queries, stage.pool, rankers,
            cluster_dir / "ranking_scores", settings.ranking_per_task, settings.ranking_prompts,
            settings.seed if settings.ranking_seed is None else settings.ranking_seed,
            batch_size=settings.batch_size, progress=settings.progress)
    return report, predictions


def run_loco(base: QuickstartConfig, held_out: list[str], train_clusters: list[str] | None,
             work_dir: Path, out: Path, eval_lm: Predictor, scoring_lm: Callable[[], Any],
             settings: EvalSettings) -> dict[str, Any]:
    """Prepares and evaluates each held-out cluster; writes out/<cluster>/ reports and
    predictions; returns {"clusters": {cluster: report}, "summary", "abstain"}."""
    reports: dict[str, dict[str, Any]] = {}
    for cluster in held_out:
        log.info("held-out cluster %s", cluster)
        cfg = cluster_config(base, cluster, train_clusters)
        stage = prepare_cluster(cfg, work_dir / cluster, scoring_lm, settings.progress)
        report, predictions = evaluate_cluster(eval_lm, cfg, work_dir / cluster, stage, settings,
                                               scoring_lm)
        write_predictions(predictions, out / cluster)
        write_json(out / cluster / REPORT_FILE, json_safe(report))
        write_report_files(report, out / cluster, title=f"held-out cluster {cluster}")
        reports[cluster] = report
    combined: dict[str, Any] = {"clusters": reports, "summary": summary(reports)}
    if settings.abstain:
        averages = {c: {m: r["methods"][m]["clusters"][c] for m in r["methods"]}
                    for c, r in reports.items()}
        combined["abstain"] = {
            "calibration": {c: r["abstain_calibration"] for c, r in reports.items()},
            "effect": abstain_effect(averages)}
    return combined
