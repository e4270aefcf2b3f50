"""Training data for the retriever: batches of texts and the Lightning DataModule.

Contract: labels come from `retriever.labels.build_training_examples`. `RetrieverDataModule`
reads the scores (`flan_data.score_folder.read_scores`), query and pool files and yields batches
of *texts* (see `collate_examples`); the `RetrieverModule` tokenizes them with its own encoder's
tokenizer, so the data side never depends on which encoder is trained. Each batch also carries
every scored candidate of its queries (for distillation and the validation ranking diagnostics)
and, optionally, random prompts of other tasks as extra negatives.

Training order is resumable: epoch `e` visits the training queries in a permutation seeded by
`seed + e` (`retriever.resumable`), and the train loader's position (epoch, batches delivered)
is saved in every checkpoint by the DataModule's `state_dict`, so a run resumed from a
checkpoint written mid-epoch continues with the batch after it, not at batch 0 of the epoch.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from flan_data.schema import Prompt, Query, Score
from flan_data.score_folder import ZERO_SHOT_FILE, read_scores, read_zero_shot
from flan_data.stage_io import read_stage_file
from retriever.labels import TrainingExample, build_training_examples, task_accuracy
from retriever.resumable import EpochSampler, ResumableLoader

log = logging.getLogger(__name__)

__all__ = ["RetrieverDataModule", "TrainingExample", "build_training_examples", "collate_examples",
           "read_scores"]


def collate_examples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Dataset items -> one batch of texts with indices into the batch's prompt union.

    An item holds `query`, `prompt_ids`/`prompt_texts` (positive first, then hard and random
    negatives) and, optionally, `scored_ids`/`scored_texts`/`scored_lm`/`scored_values` (every
    scored candidate: raw LM score and label value) and `values` ({prompt id: label value} of
    every scored candidate, present even when the scored texts are not batched; taken from
    `scored_ids`/`scored_values` when absent). Returns `queries` (batch texts), `prompts` (the
    de-duplicated union of all those prompts), `positive_idx` (batch,), `candidate_idx`
    (batch, max_labelled) with -1 padding (positive first), `scored_idx` (batch, max_scored)
    with -1 padding, `scored_lm` and `scored_values` (batch, max_scored), 0 at padding, and
    `ignore` (batch, n_prompts) bool: prompts of the union that the query's LM scores value at
    least as high as its positive (its own candidates, or another query's prompts it also
    scored), which must not count as its negatives. For in-batch negatives gathered across
    devices (`retriever.gather`), `prompt_keys` (n_prompts,) long holds each prompt's
    `prompt_key` and `as_good_keys` (batch, max_as_good) long, -1 padding, the keys of every
    prompt the query's scores value at least as high as its positive, batched here or not (so
    another rank's copy of it is no negative either).
    """
    index: dict[str, int] = {}
    prompts: list[str] = []
    for item in items:
        pairs = [*zip(item["prompt_ids"], item["prompt_texts"], strict=True),
                 *zip(item.get("scored_ids", []), item.get("scored_texts", []), strict=True)]
        for pid, text in pairs:
            if pid not in index:
                index[pid] = len(prompts)
                prompts.append(text)
    candidate_idx = _padded([[index[p] for p in it["prompt_ids"]] for it in items])  # (batch, n)
    scored_idx = _padded([[index[p] for p in it.get("scored_ids", [])] for it in items])
    scored_lm = torch.zeros(scored_idx.shape)  # (batch, n_scored)
    scored_values = torch.zeros(scored_idx.shape)  # (batch, n_scored)
    ignore = torch.zeros(len(items), len(prompts), dtype=torch.bool)  # (batch, n_prompts)
    as_good: list[list[int]] = [[] for _ in items]
    for row, item in enumerate(items):
        n = len(item.get("scored_ids", []))
        if n:
            scored_lm[row, :n] = torch.tensor(item["scored_lm"], dtype=torch.float)
            scored_values[row, :n] = torch.tensor(item["scored_values"], dtype=torch.float)
        values = item.get("values") or dict(zip(item.get("scored_ids", []),
                                                item.get("scored_values", []), strict=True))
        positive = item["prompt_ids"][0]
        if positive not in values:
            continue
        for pid, v in values.items():
            if v >= values[positive] and pid != positive:
                as_good[row].append(prompt_key(pid))
                if pid in index:
                    ignore[row, index[pid]] = True
    return {
        "queries": [item["query"] for item in items],
        "prompts": prompts,
        "positive_idx": candidate_idx[:, 0].clone(),  # (batch,)
        "candidate_idx": candidate_idx,
        "scored_idx": scored_idx,
        "scored_lm": scored_lm,
        "scored_values": scored_values,
        "ignore": ignore,
        "prompt_keys": torch.tensor([prompt_key(pid) for pid in index], dtype=torch.long),
        "as_good_keys": _padded(as_good),  # (batch, max_as_good)
    }


def prompt_key(prompt_id: str) -> int:
    """A prompt id as a non-negative int64 (63 bits of BLAKE2b; the same on every process),
    so that ranks can compare the prompts they hold with one tensor all-gather."""
    digest = hashlib.blake2b(prompt_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _padded(rows: list[list[int]]) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), -1, dtype=torch.long)  # (batch, width)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


class ExampleDataset(torch.utils.data.Dataset):
    """Training examples joined with their query and prompt texts.

    `n_random_negatives` prompts of *other* tasks are drawn per query from the pool (seeded
    by `seed` and the query id) and appended after the hard negatives. `with_scored` adds every
    scored candidate to the item (distillation and validation ranking need them). An item's
    positive is the example's positive of the current epoch (`set_epoch`; examples with
    several top candidates take turns, `TrainingExample.positive_for`); `ResumableLoader` sets
    it before each pass, so worker processes (started per pass) see it too.
    """

    def __init__(
        self,
        examples: list[TrainingExample],
        queries: dict[str, Query],
        pool: dict[str, Prompt],
        n_random_negatives: int = 0,
        with_scored: bool = True,
        seed: int = 0,
    ) -> None:
        self.items = []
        self.examples = examples
        self.texts = {pid: pool[pid].text for ex in examples for pid in ex.top_ids}
        self.epoch = 0
        pool_ids = sorted(pool)
        for ex in examples:
            if ex.query_id not in queries:
                raise KeyError(f"scored query {ex.query_id!r} is not in the queries file.")
            ids = [ex.positive_id, *ex.negative_ids]
            missing = [pid for pid in [*ids, *ex.candidate_ids] if pid not in pool]
            if missing:
                raise KeyError(f"scored prompt(s) {missing} of query {ex.query_id!r} are not in "
                               "the pool file; score and train with the same data folder.")
            task = queries[ex.query_id].task
            ids += _random_others(pool_ids, pool, task, n_random_negatives,
                                  random.Random(f"{seed}:random-negatives:{ex.query_id}"))
            item = {"query": queries[ex.query_id].input, "prompt_ids": ids,
                    "prompt_texts": [pool[pid].text for pid in ids],
                    "values": dict(zip(ex.candidate_ids, ex.candidate_values, strict=True))}
            if with_scored:
                item.update(scored_ids=list(ex.candidate_ids),
                            scored_texts=[pool[pid].text for pid in ex.candidate_ids],
                            scored_lm=list(ex.candidate_lm),
                            scored_values=list(ex.candidate_values))
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict[str, Any]:
        item, positive = self.items[i], self.examples[i].positive_for(self.epoch)
        if positive == item["prompt_ids"][0]:
            return item
        return {**item, "prompt_ids": [positive, *item["prompt_ids"][1:]],
                "prompt_texts": [self.texts[positive], *item["prompt_texts"][1:]]}


def _random_others(pool_ids: list[str], pool: dict[str, Prompt], task: str, n: int,
                   rng: random.Random) -> list[str]:
    if n <= 0:
        return []
    out: list[str] = []
    for _ in range(50 * n):  # rejection sampling: other tasks are most of any real pool
        pid = pool_ids[rng.randrange(len(pool_ids))]
        if pool[pid].task != task and pid not in out:
            out.append(pid)
            if len(out) == n:
                break
    return out


def validation_query_ids(scored_ids: Iterable[str], val_fraction: float, seed: int) -> set[str]:
    """The scored queries `RetrieverDataModule` holds out for validation: a seeded share
    `val_fraction` of them (none when fewer than two); others re-derive it from an export's
    metadata (the hybrid weight is chosen on these queries)."""
    order = sorted(set(scored_ids))
    random.Random(seed).shuffle(order)
    n_val = round(len(order) * val_fraction) if len(order) > 1 else 0
    return set(order[:n_val])


def validation_examples(scores: list[Score], val_ids: set[str],
                        n_hard_negatives: int = 0) -> list[TrainingExample]:
    """The validation queries training ranks: `val_ids`' scored candidates labelled by the plain
    UPRISE rule, so a query without a positive drops out (`RetrieverDataModule`; the hybrid's
    weight is chosen on the same ones, `uprise.evaluation.hybrid`)."""
    return build_training_examples([s for s in scores if s.query_id in val_ids],
                                   n_hard_negatives)


class RetrieverDataModule(L.LightningDataModule):
    """Scores + queries + pool -> shuffled, seeded train/val batches of texts.

    The validation queries are a seeded share of every *scored* query, chosen before any label
    option is applied, and labelled by the plain UPRISE rule: so runs with different label
    options are compared on the same validation queries (`RetrieverModule` ranks each one's
    scored candidates against the LM's scores).

    Args:
        scores_path: JSONL of Score records, or the folder written by `uprise score`.
        queries_path: JSONL of Query records (the scored training queries).
        pool_path: JSONL of Prompt records (the pool the candidates came from).
        batch_size: queries per batch.
        n_hard_negatives: lowest-valued candidates added per query as negatives.
        n_random_negatives: random prompts of other tasks added per query as negatives.
        positive_top_k: the query's k best candidates take turns as its positive, one per
            epoch (LLM-R; 1 = UPRISE's single best; see `retriever.labels`).
        label_copy_correction: judge a candidate against the candidates with the same answer
            (see `retriever.labels`).
        drop_chance_tasks: tasks where the LM is not above chance give no training labels.
        zero_shot_relative: label by each candidate's gain over the query's zero-shot score
            (read from the score folder's zero_shot.jsonl; see `retriever.labels`).
        batch_all_candidates: put every scored candidate of a query into its training batch
            (needed by the `info_nce+kl` loss; more prompts to encode per step).
        val_fraction: share of the scored queries held out for validation (0 = none).
        seed: seeds the train/val split, the shuffling (epoch `e`: `seed + e`) and the random
            negatives.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        scores_path: str | Path,
        queries_path: str | Path,
        pool_path: str | Path,
        batch_size: int = 8,
        n_hard_negatives: int = 3,
        n_random_negatives: int = 0,
        positive_top_k: int = 1,
        label_copy_correction: bool = False,
        drop_chance_tasks: bool = False,
        zero_shot_relative: bool = False,
        batch_all_candidates: bool = False,
        val_fraction: float = 0.1,
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected a positive integer.")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction}; expected a number in [0, 1).")
        if n_hard_negatives < 0 or n_random_negatives < 0:
            raise ValueError(f"n_hard_negatives={n_hard_negatives}, n_random_negatives="
                             f"{n_random_negatives}; expected integers >= 0.")
        if positive_top_k < 1:
            raise ValueError(f"positive_top_k={positive_top_k}; expected an integer >= 1 (1 = "
                             "the single best candidate, UPRISE).")
        self.save_hyperparameters()
        self.scores_path, self.queries_path, self.pool_path = scores_path, queries_path, pool_path
        self.batch_size, self.n_hard_negatives = batch_size, n_hard_negatives
        self.val_fraction, self.seed, self.num_workers = val_fraction, seed, num_workers
        self.train_set: ExampleDataset | None = None
        self.val_set: ExampleDataset | None = None
        self.tasks_at_chance: list[str] | None = None  # drop_chance_tasks: tasks without labels
        self._train_loader: ResumableLoader | None = None
        self._train_resume: dict[str, int] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        if hp.zero_shot_relative and not Path(self.scores_path).is_dir():
            raise ValueError(f"data.zero_shot_relative needs the score folder written by `uprise "
                             f"score` (it holds {ZERO_SHOT_FILE}); {self.scores_path} is not a "
                             "folder. Pass the folder, or set data.zero_shot_relative=false.")
        scores = read_scores(self.scores_path)
        queries = {q.id: q for q in read_stage_file(self.queries_path, Query)}  # count-checked
        pool = {p.id: p for p in read_stage_file(self.pool_path, Prompt)}
        scored = {s.query_id for s in scores}
        unknown = sorted(scored - queries.keys())
        if unknown:
            raise KeyError(f"{self.scores_path}: scored query {unknown[0]!r} (and "
                           f"{len(unknown) - 1} more) not in {self.queries_path}; score and "
                           "train with the same data folder.")
        val_ids = validation_query_ids(scored, self.val_fraction, self.seed)
        train_scores = [s for s in scores if s.query_id not in val_ids]
        zero_shot = (read_zero_shot(self.scores_path, scored) if hp.zero_shot_relative
                     else None)
        train = build_training_examples(
            train_scores, self.n_hard_negatives, queries, pool,
            label_copy_correction=hp.label_copy_correction,
            drop_chance_tasks=hp.drop_chance_tasks, zero_shot=zero_shot,
            positive_top_k=hp.positive_top_k)
        if hp.drop_chance_tasks:  # the same test build_training_examples applied, for the record
            self.tasks_at_chance = sorted(t for t, a in task_accuracy(train_scores, queries).items()
                                          if not a.above_chance)
        if not train:
            raise ValueError(
                f"{self.scores_path}: no training query has a usable positive (none made the LM "
                "correct or beat zero-shot, or every task is at chance); score more candidates "
                "or queries, or set data.drop_chance_tasks / data.zero_shot_relative to false."
            )
        val = validation_examples(scores, val_ids, self.n_hard_negatives)
        train.sort(key=lambda ex: ex.query_id)
        val.sort(key=lambda ex: ex.query_id)
        self.train_set = ExampleDataset(train, queries, pool, hp.n_random_negatives,
                                        with_scored=hp.batch_all_candidates, seed=self.seed)
        self.val_set = ExampleDataset(val, queries, pool, seed=self.seed)
        log.info("retriever data: %d train, %d val queries", len(self.train_set), len(val))

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        self._train_loader = ResumableLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=EpochSampler(self.train_set, self.seed, replicas, rank),
            collate_fn=collate_examples,
            num_workers=self.num_workers,
        )
        if self._train_resume is not None:
            self._train_loader.load_state_dict(self._train_resume)
            self._train_resume = None
        return self._train_loader

    def state_dict(self) -> dict[str, Any]:
        """The train loader's position; Lightning saves it in every checkpoint.

        The loader's own `state_dict` is in the checkpoint too, but Lightning (2.5-2.6, issue
        #20550) does not hand it back when `configure_optimizers` asked for
        `estimated_stepping_batches` (as `RetrieverModule` does): the DataModule's state is
        restored either way, before or after the loader exists (it applies at its next pass).
        """
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        resume = state_dict.get("train_loader")
        if resume is not None and self._train_loader is not None:
            self._train_loader.load_state_dict(resume)
        else:
            self._train_resume = resume

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
