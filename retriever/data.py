"""Training data for the retriever: labels from the LM's scores, and the Lightning DataModule.

Contract: `build_training_examples` turns `Score` records into one `TrainingExample` per query
(positive = best-scored candidate that made the LM correct; hard negatives = the lowest-scored
other candidates; queries with no correct candidate are dropped). `RetrieverDataModule` reads
the score, query and pool files and yields batches of *texts* (see `collate_examples`); the
`RetrieverModule` tokenizes them with its own encoder's tokenizer, so the data side never
depends on which encoder is trained.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from flan_data.schema import Prompt, Query, SchemaError, Score, read_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingExample:
    """One query's labels: its positive prompt, hard negatives and their LM scores."""

    query_id: str
    positive_id: str
    negative_ids: tuple[str, ...]
    lm_scores: tuple[float, ...]  # positive first, then each negative


def _is_good(score: Score) -> bool:
    return score.correct is None or score.correct is True


def build_training_examples(scores: list[Score], n_hard_negatives: int) -> list[TrainingExample]:
    """Labels each query from its candidates' scores (UPRISE: positive = best correct candidate).

    Ties are broken by prompt id, so the result does not depend on the order of `scores`.
    Examples come out in the order queries first appear in `scores`.
    """
    if n_hard_negatives < 0:
        raise ValueError(f"n_hard_negatives={n_hard_negatives}; expected an integer >= 0.")
    by_query: dict[str, dict[str, Score]] = defaultdict(dict)
    for s in scores:
        best = by_query[s.query_id].get(s.prompt_id)
        if best is None or s.score > best.score:  # duplicate pair: keep the better judgement
            by_query[s.query_id][s.prompt_id] = s
    examples, dropped = [], 0
    for query_id, cands in by_query.items():
        good = [s for s in cands.values() if _is_good(s)]
        if not good:
            dropped += 1
            continue
        positive = min(good, key=lambda s: (-s.score, s.prompt_id))
        rest = sorted(
            (s for s in cands.values() if s.prompt_id != positive.prompt_id),
            key=lambda s: (s.score, s.prompt_id),
        )[:n_hard_negatives]
        examples.append(
            TrainingExample(
                query_id=query_id,
                positive_id=positive.prompt_id,
                negative_ids=tuple(s.prompt_id for s in rest),
                lm_scores=(positive.score, *(s.score for s in rest)),
            )
        )
    log.info(
        "training examples: %d queries kept, %d dropped (no candidate made the LM correct)",
        len(examples), dropped,
    )
    return examples


def read_scores(scores_path: str | Path) -> list[Score]:
    """Reads a JSONL file of `Score` records, or a score folder written by `uprise score`.

    A folder must hold `manifest.json`; the shards it lists are read in order. If the manifest
    marks any shard (or itself) incomplete, scoring has not finished: that is an error.
    """
    path = Path(scores_path)
    if path.is_file():
        return read_jsonl(path, Score)
    if not path.is_dir():
        raise FileNotFoundError(
            f"scores_path {path} does not exist; expected a JSONL file of Score records or the "
            "folder written by `uprise score`."
        )
    return [s for shard in _shard_files(path) for s in read_jsonl(shard, Score)]


def _shard_files(folder: Path) -> list[Path]:
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} not found: {folder} is not a complete score folder. "
            "Run (or resume) `uprise score` until it writes the manifest."
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("complete") is False:
        raise ValueError(f"{manifest_path} says scoring is incomplete; resume `uprise score`.")
    entries = manifest.get("shards")
    if not isinstance(entries, list):
        shards = sorted(folder.glob("shard-*.jsonl"))
    else:
        shards = []
        for entry in entries:
            name = entry if isinstance(entry, str) else _entry_name(entry)
            if isinstance(entry, dict) and entry.get("complete") is False:
                raise ValueError(
                    f"{manifest_path}: shard {name} is incomplete; resume `uprise score`."
                )
            shards.append(folder / name)
    if not shards:
        raise SchemaError(f"{folder}: no score shards found (manifest lists none).")
    return shards


def _entry_name(entry: Any) -> str:
    for key in ("file", "path", "name", "shard"):
        if isinstance(entry, dict) and isinstance(entry.get(key), str):
            return Path(entry[key]).name
    raise SchemaError(f"unrecognised shard entry {entry!r:.120} in a score manifest.")


def collate_examples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Dataset items -> one batch of texts with indices into the batch's prompt union.

    Returns `queries` (batch texts), `prompts` (the de-duplicated union of every item's
    candidates), `positive_idx` (batch,), `candidate_idx` (batch, max_candidates) with -1
    padding (positive first), and `lm_scores` (batch, max_candidates), 0 at padding.
    """
    index: dict[str, int] = {}
    prompts: list[str] = []
    for item in items:
        for pid, text in zip(item["prompt_ids"], item["prompt_texts"], strict=True):
            if pid not in index:
                index[pid] = len(prompts)
                prompts.append(text)
    width = max(len(item["prompt_ids"]) for item in items)
    candidate_idx = torch.full((len(items), width), -1, dtype=torch.long)  # (batch, n_cand)
    lm_scores = torch.zeros(len(items), width)  # (batch, n_cand)
    for row, item in enumerate(items):
        n = len(item["prompt_ids"])
        candidate_idx[row, :n] = torch.tensor([index[pid] for pid in item["prompt_ids"]])
        lm_scores[row, :n] = torch.tensor(item["lm_scores"], dtype=torch.float)
    return {
        "queries": [item["query"] for item in items],
        "prompts": prompts,
        "positive_idx": candidate_idx[:, 0].clone(),  # (batch,)
        "candidate_idx": candidate_idx,
        "lm_scores": lm_scores,
    }


class ExampleDataset(torch.utils.data.Dataset):
    """Training examples joined with their query and prompt texts."""

    def __init__(
        self, examples: list[TrainingExample], queries: dict[str, Query], pool: dict[str, Prompt]
    ) -> None:
        self.items = []
        for ex in examples:
            if ex.query_id not in queries:
                raise KeyError(f"scored query {ex.query_id!r} is not in the queries file.")
            ids = [ex.positive_id, *ex.negative_ids]
            missing = [pid for pid in ids if pid not in pool]
            if missing:
                raise KeyError(f"scored prompt(s) {missing} of query {ex.query_id!r} are not in "
                               "the pool file; score and train with the same data folder.")
            self.items.append({
                "query": queries[ex.query_id].input,
                "prompt_ids": ids,
                "prompt_texts": [pool[pid].text for pid in ids],
                "lm_scores": list(ex.lm_scores),
            })

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class RetrieverDataModule(L.LightningDataModule):
    """Scores + queries + pool -> shuffled, seeded train/val batches of texts.

    Args:
        scores_path: JSONL of Score records, or the folder written by `uprise score`.
        queries_path: JSONL of Query records (the scored training queries).
        pool_path: JSONL of Prompt records (the pool the candidates came from).
        batch_size: queries per batch.
        n_hard_negatives: lowest-scored candidates added per query as negatives.
        val_fraction: share of the kept queries held out for validation (0 = none).
        seed: seeds the train/val split and the shuffling.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        scores_path: str | Path,
        queries_path: str | Path,
        pool_path: str | Path,
        batch_size: int = 8,
        n_hard_negatives: int = 3,
        val_fraction: float = 0.1,
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected a positive integer.")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction}; expected a number in [0, 1).")
        self.save_hyperparameters()
        self.scores_path, self.queries_path, self.pool_path = scores_path, queries_path, pool_path
        self.batch_size, self.n_hard_negatives = batch_size, n_hard_negatives
        self.val_fraction, self.seed, self.num_workers = val_fraction, seed, num_workers
        self.train_set: ExampleDataset | None = None
        self.val_set: ExampleDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        examples = build_training_examples(read_scores(self.scores_path), self.n_hard_negatives)
        if not examples:
            raise ValueError(
                f"{self.scores_path}: no query has a candidate that made the LM correct, so "
                "there is nothing to train on; score more candidates or queries."
            )
        queries = {q.id: q for q in read_jsonl(self.queries_path, Query)}
        pool = {p.id: p for p in read_jsonl(self.pool_path, Prompt)}
        order = sorted(examples, key=lambda ex: ex.query_id)
        random.Random(self.seed).shuffle(order)
        n_val = round(len(order) * self.val_fraction) if len(order) > 1 else 0
        self.val_set = ExampleDataset(order[:n_val], queries, pool)
        self.train_set = ExampleDataset(order[n_val:], queries, pool)
        log.info("retriever data: %d train, %d val queries", len(self.train_set), n_val)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=collate_examples,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list:
        assert self.val_set is not None, "call setup() first"
        if len(self.val_set) == 0:
            return []
        return DataLoader(
            self.val_set,
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=collate_examples,
            num_workers=self.num_workers,
        )
