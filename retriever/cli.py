"""`uprise train` (a LightningCLI) and `uprise index`, plus `train_retriever` for in-process use.

Contract: `train_main(argv)` is a LightningCLI over `RetrieverModule` and `RetrieverDataModule`.
The network stays injected: the top-level `--encoder.*` group is a `BiEncoderConfig`, and the
CLI builds `BiEncoder(config)` and passes it as `model.model` (a link applied at instantiation),
so a config reads

    encoder: {base_model: embedded:all-MiniLM-L6-v2, pooling: mean}
    model: {lr: 3.0e-5, temperature: 0.05}
    data: {scores_path: ..., queries_path: ..., pool_path: ..., batch_size: 8}
    trainer: {max_epochs: 3, default_root_dir: runs/train}
    export_dir: runs/retriever

`seed_everything` also seeds the data split and shuffling (linked to `data.seed`) and each
training batch's dropout (linked to `model.seed`), so `--ckpt_path` resumes exactly. The resolved
config is saved as `config.yaml` in the run's log dir by LightningCLI's SaveConfigCallback with
`overwrite=True`: a rerun into the same directory replaces it, so the file always describes the
latest run (loggers version their directories, so normally nothing clashes). Library versions go
to `run_info.json` beside it. Before `fit`, one validation pass measures the untrained towers'
ranking quality (the reference); after `fit`, the best epoch's weights by validation `ndcg@3`
are restored (`model.select_best`), every pass is written to `ranking.json` in the log dir,
and the model is exported to `--export_dir` with that record in its metadata. A non-empty
`--export_dir` (without `--overwrite_export`) is refused before any model is built or fitted.

`uprise index` refuses a directory that already holds an index unless `--overwrite` is given,
and checks its options and `--pool` before anything is loaded or created.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from flan_data.provenance import run_info
from flan_data.schema import refuse_nonempty_dir, write_json
from retriever.data import RetrieverDataModule
from retriever.export import export_retriever
from retriever.index import INDEX_FILE, INDEX_MANIFEST
from retriever.model import BiEncoder, BiEncoderConfig
from retriever.module import SELECT_METRIC, RetrieverModule
from retriever.settings import RANKING_FILE, TrainSettings

log = logging.getLogger(__name__)


class SaveConfigAndRunInfo(SaveConfigCallback):
    """Saves the resolved `config.yaml` and, beside it, `run_info.json` (library versions)."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        write_json(Path(trainer.log_dir or trainer.default_root_dir) / "run_info.json", run_info())


class RetrieverCLI(LightningCLI):
    """LightningCLI with an `--encoder` group that builds the injected `BiEncoder`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(BiEncoderConfig, "encoder")
        parser.link_arguments("encoder", "model.model", compute_fn=BiEncoder,
                              apply_on="instantiate")
        parser.link_arguments("seed_everything", "data.seed")
        parser.link_arguments("seed_everything", "model.seed")
        parser.link_arguments("model.loss", "data.batch_all_candidates",
                              compute_fn=lambda loss: loss == "info_nce+kl")
        parser.add_argument("--export_dir", type=str | None, default=None,
                            help="export the trained retriever here after fit")
        parser.add_argument("--overwrite_export", type=bool, default=False,
                            help="replace a non-empty --export_dir")
        parser.add_argument("--metadata", type=dict[str, Any], default={},
                            help="extra facts recorded in the export (scoring LM, clusters, ...)")

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit":
            cfg = self.config[self.subcommand]
            check_export_dir(cfg.export_dir, cfg.overwrite_export)

    def before_fit(self) -> None:
        self.datamodule.setup("fit")
        if len(self.datamodule.val_set or []):
            self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)

    def after_fit(self) -> None:
        cfg = self.config[self.subcommand]
        best = self.model.restore_best()
        if best is not None and best["stage"] == "reference":
            log.warning("no epoch beat the untrained towers on validation %s (%.4f): the export "
                        "holds the starting weights (--model.keep_start_if_best=false exports "
                        "the best epoch anyway)", SELECT_METRIC, best[SELECT_METRIC])
        ranking = {"select_metric": SELECT_METRIC, "best": best,
                   "history": self.model.ranking_history}
        if self.trainer.is_global_zero:
            write_json(Path(self.trainer.log_dir or self.trainer.default_root_dir)
                       / RANKING_FILE, ranking)
        if not cfg.export_dir or not self.trainer.is_global_zero:
            return
        data = cfg.data
        metadata = {
            "trained": True,
            "scores_path": str(data.scores_path),
            "queries_path": str(data.queries_path),
            "pool_path": str(data.pool_path),
            "seed": cfg.seed_everything,
            "val_fraction": data.val_fraction,
            "n_hard_negatives": data.n_hard_negatives,
            "n_random_negatives": data.n_random_negatives,
            "positive_top_k": data.positive_top_k,
            "label_copy_correction": data.label_copy_correction,
            "drop_chance_tasks": data.drop_chance_tasks,
            "zero_shot_relative": data.zero_shot_relative,
            "tasks_at_chance": self.datamodule.tasks_at_chance,  # gave no labels (None: option off)
            "loss": self.model.hparams.loss,
            "global_steps": self.trainer.global_step,
            "validation_ranking": {
                "reference": next((r for r in ranking["history"] if r["stage"] == "reference"),
                                  None),
                "exported": best,
            },
            **dict(cfg.metadata or {}),
        }
        export_retriever(self.model.model, cfg.export_dir, metadata,
                         overwrite=cfg.overwrite_export)


def check_export_dir(export_dir: str | Path | None, overwrite: bool) -> None:
    """Refuses, before fitting, the export directory that `export_retriever` would refuse after."""
    if not export_dir:
        return
    refuse_nonempty_dir(export_dir, "--export_dir", "pass --overwrite_export=true (overwrite=True "
                        "in train_retriever) to replace it after training, or choose another "
                        "directory.", overwrite=overwrite)


def _cli(args: list[str] | dict[str, Any] | None) -> RetrieverCLI:
    with warnings.catch_warnings():
        # `uprise train` passes the rest of sys.argv as `args`; Lightning would warn about both.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return RetrieverCLI(
            RetrieverModule,
            RetrieverDataModule,
            args=args,
            seed_everything_default=42,
            save_config_callback=SaveConfigAndRunInfo,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "uprise train"},
        )


def train_main(args: list[str] | None = None) -> None:
    """`uprise train fit --config C.yaml [--trainer.max_epochs 1 ...]`."""
    _cli(args)


def train_retriever(
    scores_path: str | Path,
    queries_path: str | Path,
    pool_path: str | Path,
    out_dir: str | Path,
    export_dir: str | Path | None = None,
    settings: TrainSettings | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **changes: Any,
) -> Path:
    """Trains and exports a retriever through the same LightningCLI as `uprise train`.

    `settings` (default `TrainSettings()`, with any `TrainSettings` field given as a keyword
    in `changes`, e.g. `epochs=1`) becomes the structured config of `uprise train fit`
    (`TrainSettings.cli_config`). `out_dir` is the run directory (config.yaml, run_info.json,
    metrics CSV, ranking.json); the export goes to `export_dir` (default: `out_dir/retriever`).
    Returns the export directory.
    """
    settings = (settings or TrainSettings()).replace(**changes)
    export = Path(export_dir) if export_dir is not None else Path(out_dir) / "retriever"
    _cli(settings.cli_config(scores_path, queries_path, pool_path, out_dir, export, metadata,
                             overwrite, progress))
    return export


def index_main(args: list[str] | None = None) -> None:
    """`uprise index --retriever DIR --pool pool.jsonl [--factory HNSW32] [--add]`: FAISS index of
    the pool beside the export, or (`--add`) new prompts appended to an existing index."""
    from retriever.index_dir import add_prompts, index_pool

    parser = argparse.ArgumentParser(prog="uprise index", description=index_main.__doc__)
    parser.add_argument("--retriever", required=True, help="exported retriever directory")
    parser.add_argument("--pool", required=True, help="JSONL of Prompt records to index (or add)")
    parser.add_argument("--output-dir", default=None, help="default: the retriever directory")
    parser.add_argument("--factory", default="Flat",
                        help="faiss index_factory string: Flat (exact, default), HNSW32, "
                             "IVF1024,Flat, IVF1024,PQ48, ...")
    parser.add_argument("--nprobe", type=int, default=None, help="IVF lists searched per query")
    parser.add_argument("--ef-search", type=int, default=None, help="HNSW search breadth")
    parser.add_argument("--seed", type=int, default=0, help="seed of IVF/PQ training")
    parser.add_argument("--add", action="store_true",
                        help="append --pool to the existing index in --retriever (ids continue)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the index already in the output directory")
    ns = parser.parse_args(args)
    _check_index_arguments(parser, ns)
    if ns.add:
        out = add_prompts(ns.retriever, ns.pool, batch_size=ns.batch_size, device=ns.device,
                          progress=not ns.no_progress)
        print(f"added {ns.pool} -> {out}")
        return
    params = {k: v for k, v in (("nprobe", ns.nprobe), ("efSearch", ns.ef_search)) if v}
    out = index_pool(ns.retriever, ns.pool, ns.output_dir, batch_size=ns.batch_size,
                     factory=ns.factory, device=ns.device, progress=not ns.no_progress,
                     search_params=params or None, seed=ns.seed)
    print(f"indexed {ns.pool} -> {out}")


def _check_index_arguments(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    """`uprise index`'s options, the pool file and the output directory, before any load."""
    for flag, value in (("--batch-size", ns.batch_size), ("--nprobe", ns.nprobe),
                        ("--ef-search", ns.ef_search)):
        if value is not None and value < 1:
            parser.error(f"{flag} {value}: expected a positive integer")
    if ns.seed < 0:
        parser.error(f"--seed {ns.seed}: expected an integer >= 0")
    if not Path(ns.retriever).is_dir():
        parser.error(f"--retriever {ns.retriever}: no such directory; pass the folder written by "
                     "`uprise train ... --export_dir`")
    if not Path(ns.pool).is_file():
        parser.error(f"--pool {ns.pool}: no such file; pass a JSONL of Prompt records (e.g. "
                     "DATA/pool.jsonl from `uprise data`)")
    if ns.add:
        if ns.overwrite or ns.output_dir:
            parser.error("--add appends to the index in --retriever itself; drop --overwrite "
                         "and --output-dir")
        return
    out = Path(ns.output_dir or ns.retriever)
    if out.exists() and not out.is_dir():
        parser.error(f"--output-dir {out} exists and is not a directory; choose another path")
    if (out / INDEX_MANIFEST).is_file() and not ns.overwrite:
        parser.error(f"{out} already holds an index ({INDEX_MANIFEST}, {INDEX_FILE}); pass "
                     "--overwrite to replace it, --add to append prompts to it, or choose another "
                     "--output-dir")


def mine_main(args: list[str] | None = None) -> None:
    """`uprise mine --data DIR (--retriever DIR | --bm25) --output-dir DIR2`: the next round of
    iterative mining (candidates = the trained retriever's, or BM25's, top-k same-task prompts +
    random ones); then `uprise score --data DIR2 ...` and train on its scores."""
    from retriever.mining import mine_round

    parser = argparse.ArgumentParser(prog="uprise mine", description=mine_main.__doc__)
    parser.add_argument("--data", required=True, help="data folder of the previous round")
    ranker = parser.add_mutually_exclusive_group(required=True)
    ranker.add_argument("--retriever", help="retriever trained on that round")
    ranker.add_argument("--bm25", action="store_true",
                        help="rank each query's task prompts with BM25 instead (EPR's candidates)")
    parser.add_argument("--output-dir", required=True, help="the new round's data folder")
    parser.add_argument("--top-k", type=int, default=5, help="retrieved candidates per query")
    parser.add_argument("--n-random", type=int, default=5, help="random same-task candidates")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--overwrite", action="store_true")
    ns = parser.parse_args(args)
    if ns.top_k < 1 or ns.n_random < 0:
        parser.error(f"--top-k {ns.top_k} / --n-random {ns.n_random}: expected >= 1 and >= 0")
    out = mine_round(ns.data, ns.retriever, ns.output_dir, ns.top_k, ns.n_random, ns.seed,
                     overwrite=ns.overwrite)
    print(f"mined -> {out}")
