"""In-batch negatives across devices: every rank's prompts become negatives of every query.

Contract: `gather_prompts(p_emb, positive_idx, ignore, keys, as_good)` returns the prompts of
all ranks (with gradients flowing back to the rank that encoded them), each query's positive
index shifted to its own rank's block, and an `ignore` mask over the gathered prompts that hides
the padding (ranks may hold different prompt counts) and carries the local mask. Given the
prompts' keys (`retriever.data.prompt_key`), it also hides, in the other ranks' blocks, every
copy of a prompt already present (the local copy, else the first) and every prompt the query's
LM scores value at least as high as its positive (`as_good`): the same-task false negatives
the local mask removes on one device, removed across devices too. On one process (or when
torch.distributed is not initialised) it returns its inputs unchanged. Feeding the result to
`retriever.losses.info_nce` on each rank, with DDP averaging the gradients, gives exactly the
gradient of the mean of the ranks' losses over the global batch on one process (the DPR /
UPRISE setup; with keys, also when ranks share prompts).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather as all_gather_with_grad


def world() -> tuple[int, int]:
    """(rank, world size), (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_prompts(
    p_emb: torch.Tensor,
    positive_idx: torch.Tensor,
    ignore: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
    as_good: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """All ranks' prompt embeddings; see the module docstring.

    Args:
        p_emb: (n_prompts, dim) this rank's prompt embeddings.
        positive_idx: (batch,) rows of `p_emb` holding each local query's positive.
        ignore: (batch, n_prompts) bool or None, prompts a local query must not count as
            negatives.
        keys: (n_prompts,) long, non-negative, or None: one key per distinct prompt (equal
            keys = the same prompt on every rank). None: every gathered prompt is a negative
            of every other rank's queries.
        as_good: (batch, m) long or None, -1 padding: keys a local query must not count as
            negatives wherever they are gathered from (with `keys` only).

    Returns:
        (world * width, dim) gathered embeddings (each rank's block padded to the largest
        count, `width`), (batch,) shifted positives, (batch, world * width) bool ignore mask.
    """
    rank, size = world()
    if size == 1:
        return p_emb, positive_idx, ignore
    count = torch.tensor([p_emb.shape[0]], device=p_emb.device)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    width = int(max(c.item() for c in counts))
    padded = F.pad(p_emb, (0, 0, 0, width - p_emb.shape[0]))  # (width, dim)
    blocks = all_gather_with_grad(padded)  # world x (width, dim)
    gathered = torch.cat(blocks)  # (world * width, dim)
    mask = torch.ones(len(positive_idx), size * width, dtype=torch.bool,
                      device=p_emb.device)  # (batch, world * width)
    for r, c in enumerate(counts):
        mask[:, r * width : r * width + int(c.item())] = False
    if ignore is not None:
        local = mask[:, rank * width : rank * width + p_emb.shape[0]]  # (batch, n_prompts)
        local |= ignore.to(mask.device)
    if keys is not None:
        mask |= _hidden_foreign(keys, as_good, rank, size, width)
    return gathered, positive_idx + rank * width, mask


def _hidden_foreign(keys: torch.Tensor, as_good: torch.Tensor | None, rank: int, size: int,
                    width: int) -> torch.Tensor:
    """(batch or 1, size * width) bool: the other ranks' columns a local query must not see,
    copies of a prompt held here or earlier, and prompts it values as high as its positive."""
    padded = F.pad(keys, (0, width - keys.shape[0]), value=-1)  # (width,)
    blocks = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(blocks, padded)
    all_keys = torch.cat(blocks)  # (size * width,)
    n = all_keys.shape[0]
    foreign = torch.ones(n, dtype=torch.bool, device=keys.device)
    foreign[rank * width : (rank + 1) * width] = False
    # keep one column per key, the local copy first: lowest priority wins
    priority = torch.arange(n, device=keys.device) + n * foreign  # (size * width,)
    distinct, inverse = torch.unique(all_keys, return_inverse=True)
    kept = torch.full((len(distinct),), 2 * n, device=keys.device)
    kept = kept.scatter_reduce(0, inverse, priority, reduce="amin")  # (n_distinct,)
    hidden = (priority != kept[inverse]) & foreign  # (size * width,)
    if as_good is None or as_good.shape[1] == 0:
        return hidden[None]
    valid = as_good >= 0  # (batch, m)
    match = (all_keys[None, :, None] == as_good[:, None, :]) & valid[:, None, :]  # (b, n, m)
    return hidden[None] | (match.any(dim=-1) & foreign[None])
