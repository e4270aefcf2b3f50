"""Two gloo processes with gathered in-batch negatives equal the global loss on one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from retriever.gather import gather_prompts
from retriever.losses import info_nce

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gather_worker import SPLIT_P, SPLIT_Q, global_batch  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_returns_its_inputs():
    p, pos = torch.randn(3, 4), torch.tensor([0, 2])
    assert gather_prompts(p, pos, None) == (p, pos, None)


def test_two_ranks_equal_the_global_batch_on_one_process(tmp_path):
    port, env = str(_free_port()), {**os.environ, "PYTHONPATH": str(HERE.parents[1]),
                                    "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(HERE / "gather_worker.py"), str(rank), "2",
                               port, str(tmp_path / f"rank{rank}.pt")], env=env,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]

    # One process: each rank's queries against ALL prompts (its own mask only), summed over
    # ranks; DDP averages parameter gradients, so the sum is what each rank's tensors receive.
    q, p, positive, ignore = global_batch()
    q, p = q.clone().requires_grad_(True), p.clone().requires_grad_(True)
    losses = []
    for (q0, q1), (p0, p1) in zip(SPLIT_Q, SPLIT_P, strict=True):
        mask = torch.zeros(q1 - q0, 8, dtype=torch.bool)
        mask[:, p0:p1] = ignore[q0:q1, p0:p1]
        losses.append(info_nce(q[q0:q1], p, positive[q0:q1], temperature=0.5, ignore=mask))
    sum(losses).backward()
    for rank, got in enumerate(ranks):
        (q0, q1), (p0, p1) = SPLIT_Q[rank], SPLIT_P[rank]
        assert torch.allclose(got["loss"], losses[rank].detach(), atol=1e-6)
        assert torch.allclose(got["q_grad"], q.grad[q0:q1], atol=1e-6)
        assert torch.allclose(got["p_grad"], p.grad[p0:p1], atol=1e-6)
