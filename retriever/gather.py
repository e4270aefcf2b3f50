"""In-batch negatives across devices: every rank's prompts become negatives of every query.

Contract: `gather_prompts(p_emb, positive_idx, ignore)` returns the prompts of all ranks (with
gradients flowing back to the rank that encoded them), each query's positive index shifted to
its own rank's block, and an `ignore` mask over the gathered prompts that hides the padding
(ranks may hold different prompt counts) and carries the local mask. On one process (or when
torch.distributed is not initialised) it returns its inputs unchanged. Feeding the result to
`retriever.losses.info_nce` on each rank, with DDP averaging the gradients, gives exactly the
gradient of the mean of the ranks' losses over the global batch (the DPR / UPRISE setup).
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """All ranks' prompt embeddings; see the module docstring.

    Args:
        p_emb: (n_prompts, dim) this rank's prompt embeddings.
        positive_idx: (batch,) rows of `p_emb` holding each local query's positive.
        ignore: (batch, n_prompts) bool or None, prompts a local query must not count as
            negatives.

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
    return gathered, positive_idx + rank * width, mask
