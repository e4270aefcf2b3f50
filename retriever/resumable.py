"""A resumable training order: `EpochSampler` and `ResumableLoader`.

Contract: epoch `e` visits the dataset in a permutation seeded by `seed + e` alone (not by how
often a generator was drawn from before), this replica's share of it under DDP; the loader's
state is (epoch, batches delivered in it), saved in checkpoints through the DataModule, and a
loader given that state skips, in that epoch, the batches the checkpoint had trained on. With
them, a run resumed mid-epoch sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler


class EpochSampler(DistributedSampler):
    """The training order: a permutation seeded by `seed + epoch` (Lightning calls `set_epoch`),
    this replica's share of it, from index `start` on (`start` applies to one pass, then resets).

    A `DistributedSampler` so that Lightning keeps it under DDP instead of wrapping it; on one
    device it is one replica holding every index. `len()` stays the full share even while
    `start` skips some: Lightning counts a resumed epoch's batches from the checkpoint's batch.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int, num_replicas: int = 1,
                 rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self):
        start, self.start = self.start, 0
        return iter(list(super().__iter__())[start:])


class ResumableLoader(DataLoader):
    """A DataLoader over an `EpochSampler` whose state is (epoch, batches delivered in it).

    `load_state_dict` (from `RetrieverDataModule.load_state_dict` on resume) takes effect at the
    next pass, which then skips the batches the checkpoint had already trained on. Batches are
    counted as they reach the training loop (Lightning does not prefetch from a loader with a
    length), so worker prefetching is not counted. A state saved in another epoch than the one
    resumed skips nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delivered = 0
        self._resume: dict[str, int] | None = None

    def __iter__(self):
        resume, self._resume = self._resume, None
        epoch = getattr(self.sampler, "epoch", 0)
        skip = resume["batches"] if resume and resume["epoch"] == epoch else 0
        if skip and isinstance(self.sampler, EpochSampler):
            self.sampler.start = skip * self.batch_size
        self._delivered = skip if isinstance(self.sampler, EpochSampler) else 0
        if hasattr(self.dataset, "set_epoch"):  # e.g. positives that change with the epoch
            self.dataset.set_epoch(epoch)
        for batch in super().__iter__():
            self._delivered += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": getattr(self.sampler, "epoch", 0), "batches": self._delivered}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = {"epoch": int(state_dict["epoch"]), "batches": int(state_dict["batches"])}
