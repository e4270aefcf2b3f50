"""`python gather_worker.py RANK WORLD PORT OUT [keys]`: one gloo rank of the gathered InfoNCE
test.

Every rank builds the same seeded global batch, keeps its own share (rank 0: queries 0-1 and
prompts 0-2; rank 1: queries 2-3 and prompts 3-7, so the ranks hold different prompt counts),
computes `info_nce` over `gather_prompts`, backpropagates, and saves its loss and the gradients
of its local query and prompt embeddings to OUT. With `keys`, the ranks share a prompt (row 5
is a copy of row 1, the positive of query 0) and two queries value a prompt of the other rank
as high as their positive (`AS_GOOD`); the prompts' keys go to `gather_prompts`.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from retriever.gather import gather_prompts
from retriever.losses import info_nce

SPLIT_Q, SPLIT_P = [(0, 2), (2, 4)], [(0, 3), (3, 8)]


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 6, generator=g)  # (queries, dim)
    p = torch.randn(8, 6, generator=g)  # (prompts, dim)
    positive = torch.tensor([1, 0, 4, 6])  # global prompt rows; each inside its rank's share
    ignore = torch.zeros(4, 8, dtype=torch.bool)  # (queries, prompts)
    ignore[0, 2] = ignore[3, 7] = True  # a local prompt as good as the positive
    return q, p, positive, ignore


KEYS = torch.tensor([10, 11, 12, 13, 14, 11, 16, 17])  # (prompts,) row 5 is row 1's prompt
AS_GOOD = {1: [17], 2: [10]}  # query -> keys of another rank's prompts as good as its positive


def keyed_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`global_batch` with row 5 a copy of row 1, and each query's as-good keys (-1 padding)."""
    q, p, positive, ignore = global_batch()
    p[5] = p[1]
    as_good = torch.full((4, 2), -1)  # (queries, max as-good)
    for row in range(4):
        local = [int(KEYS[c]) for c in range(8) if ignore[row, c]]
        for i, key in enumerate(local + AS_GOOD.get(row, [])):
            as_good[row, i] = key
    return q, p, positive, as_good


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    keyed = sys.argv[5:] == ["keys"]
    q, p, positive, ignore = global_batch()
    keys = as_good = None
    if keyed:
        q, p, positive, as_good = keyed_batch()
    (q0, q1), (p0, p1) = SPLIT_Q[rank], SPLIT_P[rank]
    q_local = q[q0:q1].clone().requires_grad_(True)  # (2, dim)
    p_local = p[p0:p1].clone().requires_grad_(True)  # (n_local, dim)
    if keyed:
        keys, as_good = KEYS[p0:p1], as_good[q0:q1]
    all_p, pos, mask = gather_prompts(p_local, positive[q0:q1] - p0, ignore[q0:q1, p0:p1],
                                      keys, as_good)
    loss = info_nce(q_local, all_p, pos, temperature=0.5, ignore=mask)
    loss.backward()
    torch.save({"loss": loss.detach(), "q_grad": q_local.grad, "p_grad": p_local.grad}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
