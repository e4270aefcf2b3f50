"""Scoring on one CPU, N GPUs or several nodes with Lightning's `Trainer.predict`.

Contract: `score_candidates_distributed(lm, queries, prompts, candidates, out_dir, ...)` writes
the same score folder as `scoring.score_candidates` (same shards, same manifest, see
`proxy_lm.shards`), with any Lightning accelerator / device count / node count / strategy.

How: one dataset item is one shard index. Rank 0 opens (or checks and reconciles) the
manifest in `setup`, then every rank takes the pending shards `pending[rank::world]` (padded
with no-op items so every rank runs the same number of steps); `predict_step` scores a shard
with `ShardScorer` (prompt-grouped engine + score cache) and `ShardWriter` writes it
atomically. Rank 0 reconciles the manifest after each of its shards and, after a barrier, at
the end: shard files are the completion markers, so ranks never write the same file. Output
folders must be on a filesystem that every node sees. Nothing is gathered in memory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from flan_data.schema import Candidates, Prompt, Query, write_jsonl
from flan_data.score_folder import SCORE_MANIFEST, read_manifest
from proxy_lm.loading import LanguageModel
from proxy_lm.scoring import ShardScorer, candidate_pairs, open_score_cache
from proxy_lm.shards import open_manifest, reconcile, shard_pairs, work_order

log = logging.getLogger(__name__)


class ScoringTask(L.LightningModule):
    """The system: the frozen LM (a plain module, injected) and the shard work of this rank."""

    def __init__(self, lm: LanguageModel, queries: dict[str, Query], prompts: dict[str, Prompt],
                 candidates: list[Candidates], out_dir: Path, shard_size: int, batch_size: int,
                 score_cache: str | Path | bool | None) -> None:
        super().__init__()
        self.model = lm.model  # registered, so Lightning moves it to this rank's device
        self.lm, self.queries, self.prompts = lm, queries, prompts
        self.out_dir, self.shard_size, self.score_cache = out_dir, shard_size, score_cache
        self.pairs = candidate_pairs(queries, prompts, candidates)
        self.work = work_order(self.pairs)
        self.batch_size = batch_size
        self.manifest: dict = {}
        self.mine: list[int | None] = []
        self.scorer: ShardScorer | None = None

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if self.trainer.is_global_zero:
            open_manifest(self.out_dir, self.lm.name, self.pairs, self.shard_size)
        strategy.barrier("manifest")  # rank 0 created, or checked and reconciled, the manifest
        self.manifest = read_manifest(self.out_dir)
        strategy.barrier("read")  # every rank sees the same pending shards before any writes
        pending = [i for i, e in enumerate(self.manifest["shards"]) if not e["complete"]]
        rank, world = self.trainer.global_rank, self.trainer.world_size
        steps = max(1, -(-len(pending) // world))
        self.mine = (pending[rank::world] + [None] * steps)[:steps]
        self.scorer = ShardScorer(self.lm, self.queries, self.prompts,
                                  open_score_cache(self.lm, self.score_cache), self.batch_size)
        self.scorer.preload([p for i in self.mine if i is not None
                             for p in shard_pairs(self.work, self.manifest, i)])
        log.info("rank %d/%d: %d of %d pending shards", rank, world,
                 sum(i is not None for i in self.mine), len(pending))

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.mine, batch_size=1, collate_fn=_only, num_workers=0)

    def predict_step(self, batch: int | None, batch_idx: int) -> tuple[int, list] | None:
        if batch is None:
            return None
        return batch, self.scorer.score(shard_pairs(self.work, self.manifest, batch))


def _only(items: list[Any]) -> Any:
    return items[0]


class ShardWriter(BasePredictionWriter):
    """Writes each predicted shard; rank 0 keeps the manifest up to date."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        if prediction is None:
            return
        index, scores = prediction
        write_jsonl(pl_module.out_dir / pl_module.manifest["shards"][index]["file"], scores)
        if trainer.is_global_zero:
            reconcile(pl_module.out_dir, pl_module.manifest)

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("shards")
        if trainer.is_global_zero:
            reconcile(pl_module.out_dir, pl_module.manifest)
        scorer = pl_module.scorer
        log.info("rank %d: %d pairs computed, %d from the score cache", trainer.global_rank,
                 scorer.computed, scorer.cached)


def score_candidates_distributed(
    lm: LanguageModel,
    queries: dict[str, Query],
    prompts: dict[str, Prompt],
    candidates: list[Candidates],
    out_dir: str | Path,
    shard_size: int = 256,
    batch_size: int = 16,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    progress: bool = True,
    score_cache: str | Path | bool | None = True,
) -> bool:
    """Scores every candidate pair with `Trainer.predict`; True on the global-zero process
    (which may then read the folder with `read_scores`), False on the others."""
    if strategy == "auto" and (num_nodes > 1 or devices not in (1, "1")):
        strategy = "ddp"
    task = ScoringTask(lm, queries, prompts, candidates, Path(out_dir), shard_size, batch_size,
                       score_cache)
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=progress, callbacks=[ShardWriter()], use_distributed_sampler=False,
    )
    trainer.predict(task, return_predictions=False)
    if trainer.is_global_zero and read_manifest(out_dir, required=False) is None:
        raise RuntimeError(f"scoring ended without {Path(out_dir) / SCORE_MANIFEST}; see the log "
                           "above.")
    return trainer.is_global_zero
