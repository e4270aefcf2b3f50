"""`uprise eval`: does the retriever help? Zero-shot, random, BM25, untrained and trained
retrieval (and optionally trained+abstain) on held-out clusters, with bootstrap CIs.

Three ways to pick what is evaluated:
  --data DIR --retriever DIR   one held-out cluster prepared by `uprise data` / `uprise train`
  --clusters all | C [C ...]   leave-one-cluster-out: per cluster, data, scores and retrievers
                               are built (or reused) under --work-dir/<cluster>/
  --task-file my_task.yaml     your own task(s), with their cluster held out (see README)
The evaluated LM is --lm/--eval-lm (any HF causal LM) or an OpenAI-compatible endpoint
(--api-base, --api-model); the scoring LM (--scoring-lm) only judges training candidates.
Writes report.json, report.md, report.png and predictions/ under --output-dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flan_data import (
    StageData,
    prepare_output_dir,
    read_stage_data,
    resolve_data_dir,
    write_json,
)
from flan_data.protocol import in_task_carved_ids
from flan_data.provenance import run_info
from flan_data.settings import add_arguments
from flan_data.stage_io import POOL
from retriever.settings import EMBEDDED_ENCODER, add_loss_arguments
from uprise.evaluation import (
    ABSTAIN,
    DEFAULT_METHODS,
    REPORT_FILE,
    LocalLM,
    Predictor,
    build_methods,
    cached_predictor,
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
from uprise.evaluation.prediction_cache import cache_summary
from uprise.evaluation.ranking import ranking_section, standard_rankers
from uprise.evaluation.report import REPORT_MD, markdown
from uprise.quickstart import add_mining_arguments

log = logging.getLogger(__name__)
EMBEDDED_LM = "embedded:smollm2-135m-instruct"
SINGLE_RUN_K = 3  # prompts per query in a single run when --k is not given


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uprise eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--data", help="folder written by `uprise data` (single run)")
    mode.add_argument("--clusters", nargs="+", help="held-out clusters, or 'all'")
    mode.add_argument("--task-file", help="YAML/JSONL task description (see README)")
    p.add_argument("--on", choices=("eval", "dev"), default="eval",
                   help="single run: the queries evaluated, the data's evaluation queries or its "
                        "development queries (in-task `uprise data --dev-per-task N`), on which "
                        "recipes are compared without looking at the evaluation split")
    p.add_argument("--retriever", help="single run: trained retriever export")
    p.add_argument("--baseline-retriever", help="single run: untrained export (default: built)")
    p.add_argument("--encoder", help="retriever base encoder (default: the config's)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   choices=[*DEFAULT_METHODS, HYBRID],
                   help=f"default: {' '.join(DEFAULT_METHODS)}; '{HYBRID}' mixes the trained "
                        "retriever with BM25")
    p.add_argument("--hybrid-weight", type=float,
                   help=f"'{HYBRID}': weight of the trained retriever against BM25, 0-1 "
                        "(default: chosen on the trained retriever's validation queries; the "
                        "ranking section ranks the hybrid too when its weight is known)")
    p.add_argument("--lm", "--eval-lm", dest="lm",
                   help="evaluated LM: HF causal LM id or path (default: the scoring LM)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--k", type=int,
                   help="prompts per query (default: --config's k with --clusters or "
                        f"--task-file, else {SINGLE_RUN_K})")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--ranking-per-task", type=int, default=20,
                   help="held-out queries per task whose LM scores over a shared sample of pool "
                        "prompts rank every retriever (ranking section; 0: skip)")
    p.add_argument("--ranking-prompts", type=int, default=20,
                   help="pool prompts in that shared sample")
    p.add_argument("--ranking-seed", type=int,
                   help="seed of the ranking section's query and prompt samples (default: "
                        "--seed); another value draws a fresh section, nothing retrained")
    p.add_argument("--scoring-lm-for-ranking", dest="ranking_lm",
                   help="single run: LM whose scores the ranking section uses (default: the "
                        "embedded scoring LM, or --lm when it is a local model)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--prediction-cache", metavar="DIR",
                   help="where the evaluated LM's answers are cached, so that a rerun asks only "
                        "for new ones (default: $UPRISE_PREDICTION_CACHE, else "
                        "~/.cache/uprise/predictions)")
    p.add_argument("--no-prediction-cache", action="store_true",
                   help="ask the evaluated LM for every answer")
    _add_api_options(p)
    _add_loco_options(p)
    return p


def _add_api_options(p: argparse.ArgumentParser) -> None:
    api = p.add_argument_group("OpenAI-compatible endpoint as the evaluated LM")
    api.add_argument("--api-base", help="e.g. http://localhost:8000/v1")
    api.add_argument("--api-model")
    api.add_argument("--api-key-env", help="environment variable holding the API key")
    api.add_argument("--api-endpoint", default="chat", choices=("chat", "completions"))
    api.add_argument("--api-concurrency", type=int, default=4)
    api.add_argument("--api-timeout", type=float, default=60.0)
    api.add_argument("--api-retries", type=int, default=3)


def _add_loco_options(p: argparse.ArgumentParser) -> None:
    ab = p.add_argument_group("abstention (method trained+abstain)")
    ab.add_argument("--abstain", action="store_true",
                    help="calibrate a retrieval-score threshold on training-cluster validation")
    ab.add_argument("--calibration-per-task", type=int, default=10)
    ab.add_argument("--abstain-by", choices=("all", "kind"), default="all",
                    help="one threshold for every query, or one per answer kind (choice, "
                         "generation), each calibrated on that kind's validation queries")
    loco = p.add_argument_group("leave-one-cluster-out (--clusters / --task-file)")
    loco.add_argument("--config", help="stage sizes (default: configs/loco.yaml)")
    loco.add_argument("--work-dir", default="runs/loco",
                      help="cache of per-cluster data, scores and retrievers (reused)")
    loco.add_argument("--data-dir")
    loco.add_argument("--scoring-lm", help="LM that scores training candidates")
    add_arguments(loco, ["train_clusters", "eval_per_task", "pool_per_task", "queries_per_task",
                         "n_candidates", "cross_cluster_candidates"], overrides=True)
    loco.add_argument("--epochs", type=int, help="training epochs (default: the config's)")
    loco.add_argument("--eval-seed", type=int,
                      help="seed of the held-out rows evaluated and of their templates (default: "
                           "--seed); keep it fixed across --seed replicates so they differ only "
                           "in what training drew")
    add_mining_arguments(loco)
    add_loss_arguments(loco)


def make_eval_lm(lm: str | None, dtype: str, api: dict[str, Any]) -> Predictor:
    """The evaluated LM: an `ApiLM` when `api["base"]` is set, else `proxy_lm.load_lm(lm)` (the
    embedded LM when `lm` is None) as a `LocalLM`."""
    if api.get("base"):
        from uprise.evaluation.api_lm import ApiLM

        key = None
        if api.get("key_env"):
            key = os.environ.get(api["key_env"])
            if not key:
                raise ValueError(f"--api-key-env {api['key_env']!r}: that environment variable "
                                 "is not set; export it or drop the option")
        return ApiLM(api["base"], api["model"], key, api["endpoint"], api["timeout"],
                     api["retries"], api["concurrency"])
    from proxy_lm import load_lm

    return LocalLM(load_lm(lm or EMBEDDED_LM, dtype=dtype))


def _api(args: argparse.Namespace) -> dict[str, Any]:
    return {"base": args.api_base, "model": args.api_model, "key_env": args.api_key_env,
            "endpoint": args.api_endpoint, "concurrency": args.api_concurrency,
            "timeout": args.api_timeout, "retries": args.api_retries}


def eval_main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.api_base and not args.api_model:
        parser.error("--api-base needs --api-model (the model name the server serves)")
    if args.data and ("trained" in args.methods or args.abstain) and not args.retriever:
        parser.error("--retriever is required for the 'trained' method and --abstain "
                     "(or drop them)")
    if HYBRID in args.methods and args.data and not args.retriever:
        parser.error(f"'{HYBRID}' needs a trained --retriever (or drop it)")
    if args.hybrid_weight is not None:
        from serve.hybrid import check_weight

        try:
            check_weight(args.hybrid_weight)
        except ValueError as e:
            parser.error(f"--hybrid-weight: {e}")
    if args.on == "dev" and not args.data:
        parser.error("--on dev evaluates a single run's development queries; add --data DIR")
    if args.data and (args.loss or args.lm_temperature is not None):
        parser.error("--loss / --lm-temperature set how --clusters runs train; a --data run "
                     "evaluates an already trained --retriever (train it with `uprise train fit "
                     "--model.loss info_nce+kl --model.lm_temperature T`)")
    if args.data and args.eval_seed is not None:
        parser.error("--eval-seed picks the held-out rows of a --clusters / --task-file run; a "
                     "--data run evaluates the queries its `uprise data` folder holds (build "
                     "that folder with the seed you want)")
    if args.abstain and "trained" not in args.methods:
        parser.error("--abstain compares against 'trained'; keep it in --methods")
    if args.abstain_by != "all" and not args.abstain:
        parser.error(f"--abstain-by {args.abstain_by} chooses how --abstain calibrates; add "
                     "--abstain")
    if args.no_prediction_cache and args.prediction_cache:
        parser.error(f"--prediction-cache {args.prediction_cache} and --no-prediction-cache: "
                     "give one of them")
    if args.ranking_per_task < 0 or args.ranking_prompts < 2:
        parser.error(f"--ranking-per-task {args.ranking_per_task} / --ranking-prompts "
                     f"{args.ranking_prompts}: expected >= 0 and >= 2")
    out = prepare_output_dir(args.output_dir, args.overwrite)
    start = time.perf_counter()
    if args.data:
        report = _single_run(args, out)
        title = (f"in-task ({report['config']['data_manifest']['task']}) {args.data}"
                 f"{', development queries' * (args.on == 'dev')}"
                 if report["config"]["mode"] == "in_task" else f"held-out data {args.data}")
    else:
        report, title = _multi_run(args, out), "leave-one-cluster-out evaluation"
    report["wall_time_s"] = round(time.perf_counter() - start, 1)
    report["run_info"] = run_info()
    write_json(out / REPORT_FILE, json_safe(report))
    write_report_files(report, out, title=title)
    print(markdown(report, title))
    print(f"wall time {report['wall_time_s']:.0f} s; report: {out / REPORT_MD}")


def _single_run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One held-out cluster from `uprise data` files and a trained export."""

    stage = _queries_evaluated(args, read_stage_data(args.data))
    args.k = SINGLE_RUN_K if args.k is None else args.k
    retrievers = [d for d in (args.retriever, args.baseline_retriever) if d]
    in_task = stage.manifest.get("mode") == "in_task"
    if in_task and args.abstain:
        raise ValueError(f"{args.data} is in-task data: --abstain calibrates on other clusters' "
                         "validation queries, which in-task mode does not have; drop --abstain.")
    # development rows come from the pool's own split: every pool prompt may share it, none
    # may be a development query (`withhold_dev` withheld them with their inputs)
    allowed = {p.id for p in stage.pool} if args.on == "dev" else in_task_carved_ids(
        stage.manifest)
    check_pool_leakage(stage.eval_queries, stage.pool, retrievers, in_task=in_task,
                       carved_ids=allowed)
    lm = make_eval_lm(args.lm, args.dtype, _api(args))
    answering = _with_prediction_cache(lm, args)
    names, calibration = list(args.methods), None
    if args.abstain:
        source = stage.manifest.get("data_source", "hub")
        queries = calibration_queries(stage, resolve_data_dir(source), args.seed,
                                      args.calibration_per_task)
        calibration = {**calibrate(answering, args.retriever, queries, args.k, args.batch_size,
                                   not args.no_progress), "abstain_by": args.abstain_by}
        names.append(ABSTAIN)
    hybrid = (chosen_weight(args.retriever, args.hybrid_weight, args.seed)
              if HYBRID in names or args.hybrid_weight is not None else None)
    untrained = _untrained_retriever(args, out) if "untrained" in names else None
    threshold, by_kind = applied_thresholds(calibration) if calibration else (None, None)
    methods = build_methods(
        names, stage.pool, args.k, args.seed, trained_dir=args.retriever, untrained_dir=untrained,
        abstain_threshold=threshold, hybrid_weight=hybrid["weight"] if hybrid else None,
        abstain_by_kind=by_kind)
    report, predictions = evaluate_methods(answering, stage.eval_queries, methods,
                                           args.batch_size, progress=not args.no_progress,
                                           seed=args.seed)
    report["config"] = {**vars(args), "lm_name": lm.name, "data_manifest": stage.manifest,
                        "mode": "in_task" if in_task else "held_out_cluster"}
    report["prediction_cache"] = cache_summary(answering)
    if hybrid:
        report["hybrid"] = hybrid
    if calibration:
        report["abstain"] = {"calibration": {stage.manifest["held_out_cluster"]: calibration},
                             "effect": _single_effect(report)}
    write_predictions(predictions, out)
    if args.ranking_per_task:
        report["ranking"] = _single_ranking(args, stage, lm, out,
                                            hybrid["weight"] if hybrid else None)
    return report


def _queries_evaluated(args: argparse.Namespace, stage: StageData) -> StageData:
    """The stage with the queries `--on` names in place of its evaluation queries."""
    if args.on == "eval":
        return stage
    if not stage.dev_queries:
        raise ValueError(f"{args.data} has no development queries; build it with `uprise data "
                         "--in-task TASK --dev-per-task N` or drop --on dev")
    return dataclasses.replace(stage, eval_queries=stage.dev_queries)


def _untrained_retriever(args: argparse.Namespace, out: Path) -> str | Path:
    """--baseline-retriever, else the untrained encoder indexed over the run's pool in
    out/untrained_retriever (built once; a second call finds it indexed)."""
    from uprise.stages import build_untrained_retriever

    return args.baseline_retriever or build_untrained_retriever(
        args.encoder or EMBEDDED_ENCODER, Path(args.data) / POOL, out / "untrained_retriever",
        {"seed": args.seed})


def _single_ranking(args: argparse.Namespace, stage: Any, lm: Any, out: Path,
                    hybrid_weight: float | None) -> dict[str, Any]:
    """The ranking section of a single run (see `uprise.evaluation.ranking`); the hybrid is
    ranked when its weight is known."""
    untrained = _untrained_retriever(args, out)
    same = isinstance(lm, LocalLM) and args.ranking_lm in (None, args.lm)
    judge = lm if same else make_eval_lm(args.ranking_lm or EMBEDDED_LM, args.dtype, {})
    assert isinstance(judge, LocalLM)  # no API: the ranking section scores with a local LM
    return ranking_section(judge.lm, stage.eval_queries, stage.pool,
                           standard_rankers(args.retriever, untrained, args.seed, hybrid_weight),
                           out / "ranking_scores", args.ranking_per_task, args.ranking_prompts,
                           args.seed if args.ranking_seed is None else args.ranking_seed,
                           batch_size=args.batch_size,
                           progress=not args.no_progress)


def _single_effect(report: dict[str, Any]) -> dict[str, Any]:
    by_cluster: dict[str, dict[str, float]] = {}
    for method, result in report["methods"].items():
        for cluster, value in result["clusters"].items():
            by_cluster.setdefault(cluster, {})[method] = value
    return abstain_effect(by_cluster)


def _multi_run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Leave-one-cluster-out over --clusters, or over the clusters of --task-file's tasks."""
    from uprise.loco import LOCO_CONFIG, EvalSettings, available_clusters, run_loco
    from uprise.quickstart import QuickstartConfig

    overrides = {"data_dir": args.data_dir, "lm": args.scoring_lm, "encoder": args.encoder,
                 "seed": args.seed, "pool_per_task": args.pool_per_task,
                 "queries_per_task": args.queries_per_task, "n_candidates": args.n_candidates,
                 "cross_cluster_candidates": args.cross_cluster_candidates,
                 "epochs": args.epochs, "loss": args.loss, "lm_temperature": args.lm_temperature,
                 "mining_rounds": args.mining_rounds, "mining_top_k": args.mining_top_k}
    base = QuickstartConfig.from_yaml(args.config or LOCO_CONFIG, **overrides)
    args.k = base.k if args.k is None else args.k  # the report's config records the k used
    tasks = None
    if args.task_file:
        held_out, tasks = _register_task_file(args.task_file, out)
    elif args.clusters == ["all"]:
        held_out = available_clusters(resolve_data_dir(base.data_dir))
    else:
        held_out = list(args.clusters)
    from flan_data import tasks_in

    for cluster in [*held_out, *(args.train_clusters or [])]:
        tasks_in(cluster)  # an unknown name fails here, before any model loads
    scoring_lm = _lazy_lm(base.lm, base.lm_dtype)
    same = args.lm in (None, base.lm) and not args.api_base
    eval_lm = _with_prediction_cache(
        LocalLM(scoring_lm()) if same else make_eval_lm(args.lm, args.dtype, _api(args)), args)
    eval_per_task = args.eval_per_task if args.eval_per_task is not None else base.eval_per_task
    settings = EvalSettings(
        tuple(args.methods), args.k, args.seed, args.batch_size, args.abstain,
        args.calibration_per_task, eval_per_task, eval_seed=args.eval_seed, tasks=tasks,
        progress=not args.no_progress, ranking_per_task=args.ranking_per_task,
        ranking_prompts=args.ranking_prompts, abstain_by=args.abstain_by,
        hybrid_weight=args.hybrid_weight, ranking_seed=args.ranking_seed)
    report = run_loco(base, held_out, args.train_clusters, Path(args.work_dir), out, eval_lm,
                      scoring_lm, settings)
    report["config"] = {**vars(args), "eval_lm": eval_lm.name, "scoring_lm": base.lm,
                        "held_out_clusters": held_out, "stage_config": dataclasses.asdict(base)}
    report["prediction_cache"] = cache_summary(eval_lm)
    return report


def _with_prediction_cache(lm: Predictor, args: argparse.Namespace) -> Predictor:
    return cached_predictor(lm, False if args.no_prediction_cache else
                            (args.prediction_cache or True))


def _lazy_lm(name: str, dtype: str) -> Callable[[], Any]:
    """A loader that loads `name` on its first call only (no load when every score is cached)."""
    cache: dict[str, Any] = {}

    def load() -> Any:
        if "lm" not in cache:
            from proxy_lm import load_lm

            cache["lm"] = load_lm(name, dtype=dtype)
        return cache["lm"]

    return load


def _register_task_file(path: str, out: Path) -> tuple[list[str], tuple[str, ...]]:
    from flan_data.custom_task import load_task_file, register_custom_task

    tasks = load_task_file(path)
    for task in tasks:
        register_custom_task(task, out / "custom_tasks")
    log.info("task file %s: tasks %s", path, [t.name for t in tasks])
    return sorted({t.cluster for t in tasks}), tuple(t.name for t in tasks)
