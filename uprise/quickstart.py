"""`uprise quickstart`: every stage end to end on the embedded models, with a report.

data -> score -> train -> export + index -> untrained baseline export + index -> evaluate
(zero-shot, random, untrained retriever, trained retriever; same LM, same examples).
Each stage writes its files under --output-dir and is skipped on `--resume` when its
completion marker exists, so an interrupted quickstart goes on where it stopped.
`QuickstartConfig` checks every field's type and range, and its cluster names against the
catalogue, when it is built, so a bad value fails before any stage runs and is never saved
into a run folder.
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
from typing import Any, get_args

import yaml

from flan_data import (
    prepare_output_dir,
    read_stage_data,
    resolve_data_dir,
    write_json,
    write_stage_data,
)
from flan_data.protocol import check_clusters
from flan_data.provenance import run_info
from flan_data.settings import DataSettings, add_arguments
from flan_data.stage_io import DATA_MANIFEST
from retriever.settings import LossName, TrainSettings, add_loss_arguments
from uprise.evaluation.report import REPORT_FILE

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
RUN_CONFIG = "quickstart_config.json"
"""The run folder's saved config (checked on resume; also each `uprise eval` cluster folder's)."""
LM_DTYPES = ("auto", "float32", "bfloat16", "float16")
_TRAIN = TrainSettings()
_INTS = {  # field: (smallest value, None allowed)
    "seed": (0, False), "pool_per_task": (1, True), "queries_per_task": (1, True),
    "n_candidates": (1, False), "eval_per_task": (0, True), "max_prompt_chars": (1, True),
    "cross_cluster_candidates": (0, False),
    "score_batch_size": (1, False), "epochs": (1, False), "train_batch_size": (1, False),
    "n_hard_negatives": (0, False), "n_random_negatives": (0, False), "k": (1, False),
    "grad_cache_chunk": (0, False), "positive_top_k": (1, False),
    "eval_batch_size": (1, False), "mining_rounds": (1, False), "mining_top_k": (1, False),
}
_POSITIVE_FLOATS = ("lm_temperature", "lr")
_BOOLS = ("label_copy_correction", "drop_chance_tasks", "zero_shot_relative",
          "keep_start_if_best")
_STRINGS = {"held_out_cluster": None, "lm": None, "encoder": None, "lm_dtype": LM_DTYPES,
            "loss": get_args(LossName)}


@dataclass(frozen=True)
class QuickstartConfig:
    held_out_cluster: str = "closed_book_qa"
    train_clusters: tuple[str, ...] | None = ("reading_comprehension", "commonsense", "sentiment")
    data_dir: str | None = None
    seed: int = 42
    pool_per_task: int | None = 200
    queries_per_task: int | None = 25
    n_candidates: int = 8
    cross_cluster_candidates: int = 0
    """How many of the n_candidates come from other training clusters (`flan_data.protocol`)."""
    eval_per_task: int | None = 60
    max_prompt_chars: int | None = 400
    lm: str = "embedded:smollm2-135m-instruct"
    lm_dtype: str = "auto"
    score_batch_size: int = 16
    encoder: str = _TRAIN.encoder  # the training fields default to TrainSettings'
    epochs: int = _TRAIN.epochs
    train_batch_size: int = _TRAIN.batch_size
    n_hard_negatives: int = _TRAIN.n_hard_negatives
    n_random_negatives: int = _TRAIN.n_random_negatives
    positive_top_k: int = _TRAIN.positive_top_k
    """The query's k best candidates take turns as its positive, one per epoch (LLM-R)."""
    label_copy_correction: bool = _TRAIN.label_copy_correction
    drop_chance_tasks: bool = _TRAIN.drop_chance_tasks
    zero_shot_relative: bool = _TRAIN.zero_shot_relative
    loss: LossName = _TRAIN.loss
    lm_temperature: float = _TRAIN.lm_temperature
    keep_start_if_best: bool = _TRAIN.keep_start_if_best
    """Export the starting towers when no epoch ranks validation better (`retriever.module`)."""
    grad_cache_chunk: int = _TRAIN.grad_cache_chunk
    """0 (off) or rows per forward pass of gradient caching (`retriever.grad_cache`)."""
    lr: float = _TRAIN.lr
    k: int = 3
    eval_batch_size: int = 16
    mining_rounds: int = 1
    """Training rounds; each after the first mines its candidates from the previous round's
    retriever (`uprise.rounds`)."""
    mining_top_k: int = 5
    """Retrieved candidates per query in a mined round; the other n_candidates are random."""

    def __post_init__(self) -> None:
        if isinstance(self.train_clusters, list):
            object.__setattr__(self, "train_clusters", tuple(self.train_clusters))
        for name, (low, optional) in _INTS.items():
            _check_int(name, getattr(self, name), low, optional)
        for name in _POSITIVE_FLOATS:
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                _bad(name, value, "a number > 0 (write 3.0e-5, not 3e-5, in YAML)")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                _bad(name, getattr(self, name), "true or false")
        for name, choices in _STRINGS.items():
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                _bad(name, value, "a non-empty string")
            if choices and value not in choices:
                _bad(name, value, f"one of {list(choices)}")
        if self.data_dir is not None and (not isinstance(self.data_dir, str)
                                          or not self.data_dir.strip()):
            _bad("data_dir", self.data_dir, "a folder path, 'hub' or null")
        if self.cross_cluster_candidates > self.n_candidates:
            _bad("cross_cluster_candidates", self.cross_cluster_candidates,
                 f"an integer <= n_candidates ({self.n_candidates})")
        if self.mining_rounds > 1 and self.cross_cluster_candidates:
            _bad("cross_cluster_candidates", self.cross_cluster_candidates,
                 "0 when mining_rounds > 1 (a mined round draws same-task candidates)")
        if self.mining_rounds > 1 and self.mining_top_k > self.n_candidates:
            _bad("mining_top_k", self.mining_top_k,
                 f"an integer <= n_candidates ({self.n_candidates}) when mining_rounds > 1")
        clusters = self.train_clusters
        if clusters is not None and (not isinstance(clusters, tuple) or not clusters
                                     or not all(isinstance(c, str) for c in clusters)):
            _bad("train_clusters", clusters, "a non-empty list of cluster names, e.g. "
                 "[sentiment, nli], or null for every other cluster")
        try:
            check_clusters(self.held_out_cluster, list(clusters) if clusters else None)
        except ValueError as err:  # unknown name, or the held-out cluster among train_clusters
            raise type(err)(f"quickstart config held_out_cluster / train_clusters: {err}") from err

    def data_settings(self) -> DataSettings:
        """The data stage's settings of this config."""
        return DataSettings(
            held_out_cluster=self.held_out_cluster, train_clusters=self.train_clusters,
            seed=self.seed, pool_per_task=self.pool_per_task,
            queries_per_task=self.queries_per_task, n_candidates=self.n_candidates,
            cross_cluster_candidates=self.cross_cluster_candidates,
            eval_per_task=self.eval_per_task, max_prompt_chars=self.max_prompt_chars)

    def train_settings(self) -> TrainSettings:
        """The training stage's settings of this config."""
        return TrainSettings(
            encoder=self.encoder, epochs=self.epochs, batch_size=self.train_batch_size,
            lr=self.lr, seed=self.seed, n_hard_negatives=self.n_hard_negatives,
            n_random_negatives=self.n_random_negatives, positive_top_k=self.positive_top_k,
            label_copy_correction=self.label_copy_correction,
            drop_chance_tasks=self.drop_chance_tasks,
            zero_shot_relative=self.zero_shot_relative, loss=self.loss,
            lm_temperature=self.lm_temperature, keep_start_if_best=self.keep_start_if_best,
            grad_cache_chunk=self.grad_cache_chunk)

    def export_metadata(self) -> dict[str, Any]:
        """What a retriever trained from this config records about its data and scoring LM."""
        return {"scoring_lm": self.lm, "held_out_cluster": self.held_out_cluster,
                "train_clusters": list(self.train_clusters or []), "data_dir": self.data_dir,
                "seed": self.seed}

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> QuickstartConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: holds a YAML {type(raw).__name__}, expected a mapping of "
                             "QuickstartConfig fields (see configs/quickstart.yaml).")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; expected keys {sorted(known)}.")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**raw)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bad(name: str, value: Any, expected: str) -> None:
    raise ValueError(f"quickstart config {name}: got {value!r} ({type(value).__name__}), expected "
                     f"{expected}; fix it in the --config YAML or the matching option.")


def _check_int(name: str, value: Any, low: int, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        _bad(name, value, f"an integer >= {low}" + (" or null" if optional else ""))


def check_evaluates(cfg: QuickstartConfig) -> None:
    """The quickstart evaluates at the end, so it needs evaluation queries (`loco` uses 0)."""
    if cfg.eval_per_task == 0:
        _bad("eval_per_task", 0, "an integer >= 1, or null for all, in the quickstart")


ROUND_KEYS = ("mining_rounds", "mining_top_k")
"""Config keys that round 1's stages do not read: a resumed run may change them (each mined
round checks its own folder, `uprise.rounds.check_rounds`)."""


def check_resumable(cfg: QuickstartConfig, out: Path) -> None:
    """A resumed run must use the config it started with (but for `ROUND_KEYS`); otherwise its
    files would mix."""
    saved = out / RUN_CONFIG
    if not saved.is_file():
        return
    before = json.loads(saved.read_text())["config"]
    now = json.loads(json.dumps(dataclasses.asdict(cfg)))
    defaults = json.loads(json.dumps(dataclasses.asdict(QuickstartConfig())))
    # a key the saved config lacks was added later: the run used its default
    changed = sorted(k for k in now
                     if k not in ROUND_KEYS and before.get(k, defaults[k]) != now[k])
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
    from uprise.rounds import check_rounds, mining_stages, round_methods
    from uprise.stages import evaluate_stage, index_stage, score_stage, train_stage

    check_evaluates(cfg)
    if resume:
        check_resumable(cfg, out)
        check_rounds(cfg, out)
    else:
        stale = ["data", "scores", "train", "retriever", "untrained_retriever"]
        for folder in [*(out / name for name in stale), *out.glob("round[0-9]*")]:
            if folder.exists():
                shutil.rmtree(folder)
    timings: dict[str, float] = {}
    write_json(out / RUN_CONFIG, {"config": dataclasses.asdict(cfg), **run_info()})

    t = time.perf_counter()
    if not (out / "data" / DATA_MANIFEST).is_file():
        write_stage_data(cfg.data_settings().build(resolve_data_dir(cfg.data_dir)), out / "data")
    stage = read_stage_data(out / "data")
    timings["data"] = time.perf_counter() - t

    lm = load_lm(cfg.lm, dtype=cfg.lm_dtype)
    t = time.perf_counter()
    score_stage(lm, stage, out / "scores", cfg.score_batch_size, progress)
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    train_stage(cfg.train_settings(), out, cfg.export_metadata(), progress)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    index_stage(cfg.encoder, out, cfg.export_metadata())
    timings["index"] = time.perf_counter() - t

    t = time.perf_counter()
    rounds = mining_stages(cfg, out, lambda: lm, cfg.export_metadata(), progress)
    if rounds:
        timings["mining_rounds"] = time.perf_counter() - t

    t = time.perf_counter()
    report = evaluate_stage(lm, stage, out, cfg.k, cfg.seed, cfg.eval_batch_size, progress,
                            round_methods(rounds, cfg.k))
    timings["eval"] = time.perf_counter() - t
    report["timings_s"] = timings
    write_json(out / REPORT_FILE, report)
    return report


def add_mining_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """--mining-rounds and --mining-top-k (default: the --config file's)."""
    parser.add_argument("--mining-rounds", type=int,
                        help="training rounds; each after the first mines its candidates from "
                             "the previous round's retriever (default: the config's)")
    parser.add_argument("--mining-top-k", type=int,
                        help="retrieved candidates per query in a mined round; the rest of "
                             "n_candidates are random (default: the config's)")


def quickstart_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uprise quickstart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="runs/quickstart")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty dir")
    parser.add_argument("--resume", action="store_true", help="skip stages already complete")
    add_arguments(parser, ["held_out_cluster", "seed", "eval_per_task", "queries_per_task"],
                  overrides=True)
    add_loss_arguments(parser)
    add_mining_arguments(parser)
    parser.add_argument("--data-dir")
    parser.add_argument("--lm")
    parser.add_argument("--encoder")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def quickstart_config(args: argparse.Namespace) -> QuickstartConfig:
    """The run's config: the --config file with the command line's options over it."""
    return QuickstartConfig.from_yaml(
        args.config, held_out_cluster=args.held_out_cluster, data_dir=args.data_dir, lm=args.lm,
        encoder=args.encoder, seed=args.seed, eval_per_task=args.eval_per_task,
        queries_per_task=args.queries_per_task, loss=args.loss,
        lm_temperature=args.lm_temperature, mining_rounds=args.mining_rounds,
        mining_top_k=args.mining_top_k,
    )


def quickstart_main(argv: list[str] | None = None) -> None:
    args = quickstart_parser().parse_args(argv)
    cfg = quickstart_config(args)
    check_evaluates(cfg)
    out = Path(args.output_dir)
    if not args.resume:
        prepare_output_dir(out, args.overwrite)
    start = time.perf_counter()
    report = run_quickstart(cfg, out, resume=args.resume, progress=not args.no_progress)
    from uprise.evaluation import format_table

    print(format_table(report))
    print(f"\nwall time {time.perf_counter() - start:.0f} s; report: {out / REPORT_FILE}")
