"""Two gloo processes with gathered in-batch negatives equal the global batch on one process:
the loss and gradients of `gather_prompts` + `info_nce`, and a real Lightning DDP training step."""

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
from ddp_train_worker import RANK_ITEMS, train_step  # noqa: E402
from gather_worker import KEYS, SPLIT_P, SPLIT_Q, global_batch, keyed_batch  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_returns_its_inputs():
    p, pos = torch.randn(3, 4), torch.tensor([0, 2])
    assert gather_prompts(p, pos, None) == (p, pos, None)


def _gather_ranks(tmp_path: Path, *extra: str) -> list[dict[str, torch.Tensor]]:
    port, env = str(_free_port()), {**os.environ, "PYTHONPATH": str(HERE.parents[1]),
                                    "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(HERE / "gather_worker.py"), str(rank), "2",
                               port, str(tmp_path / f"rank{rank}.pt"), *extra], env=env,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    return [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]


def test_two_ranks_equal_the_global_batch_on_one_process(tmp_path):
    ranks = _gather_ranks(tmp_path)

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


def test_a_two_process_ddp_training_step_equals_the_global_batch_on_one_process(
        tmp_path, no_dropout_bert_path):
    """Two real `Trainer(strategy=ddp, gloo)` ranks, two queries each, apply exactly the
    gradients (and reach the weights) of one process training on all four queries, whose
    in-batch negatives are every rank's prompts; a rank alone, without the other's prompts as
    negatives, would not. float64, dropout off, so only summation order differs."""
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "PYTHONPATH": str(HERE.parents[1]), "OMP_NUM_THREADS": "1",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2",
               "NODE_RANK": "0", "LOCAL_RANK": str(rank)}
        procs.append(subprocess.Popen(
            [sys.executable, str(HERE / "ddp_train_worker.py"), str(rank), "2",
             str(no_dropout_bert_path), str(tmp_path / f"rank{rank}.pt")],
            env=env, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [(r["steps"], r["world"]) for r in ranks] == [(1, 2), (1, 2)]

    one = train_step(str(no_dropout_bert_path), RANK_ITEMS[0] + RANK_ITEMS[1], devices=1)
    alone = train_step(str(no_dropout_bert_path), RANK_ITEMS[0], devices=1)
    assert one["grads"].keys() == ranks[0]["grads"].keys() and len(one["grads"]) > 10
    for name, grad in one["grads"].items():
        for rank in ranks:
            torch.testing.assert_close(rank["grads"][name], grad, atol=1e-12, rtol=1e-9,
                                       msg=name)
        # AdamW's first step moves a weight by about lr * sign(grad): compare where the
        # gradient is clearly non-zero (some are zero in exact arithmetic)
        clear = grad.abs() > 1e-9
        for rank in ranks:
            torch.testing.assert_close(rank["weights"][name][clear],
                                       one["weights"][name][clear], atol=1e-12, rtol=1e-9,
                                       msg=name)
    differs = [n for n, g in one["grads"].items()
               if not torch.allclose(alone["grads"][n], g, atol=1e-6)]
    assert len(differs) > 10  # the other rank's queries and negatives change the step


def test_keys_hide_shared_and_as_good_prompts_of_the_other_rank(tmp_path):
    """With keys, two ranks that share a prompt (one rank's positive) and whose queries value
    a prompt of the other rank as high as their positive equal one process on the union of
    distinct prompts, where each of those prompts appears once and the as-good ones are masked:
    the loss and query gradients exactly, and each distinct prompt's gradient as the sum over
    its copies."""
    ranks = _gather_ranks(tmp_path, "keys")
    q, p, positive, as_good = keyed_batch()
    rows = [0, 1, 2, 3, 4, 6, 7]  # the distinct prompts (row 5 is row 1's copy)
    keys = KEYS[rows]
    q, p_union = q.clone().requires_grad_(True), p[rows].clone().requires_grad_(True)
    column = {int(k): i for i, k in enumerate(keys)}
    pos = torch.tensor([column[int(KEYS[r])] for r in positive])
    mask = (keys[None, :, None] == as_good[:, None, :]).any(dim=-1)  # (queries, distinct)
    assert mask.sum() == 4  # two local as-good prompts, two of the other rank
    losses = [info_nce(q[q0:q1], p_union, pos[q0:q1], temperature=0.5, ignore=mask[q0:q1])
              for q0, q1 in SPLIT_Q]
    sum(losses).backward()
    summed = torch.zeros_like(p_union)  # each distinct prompt's gradient over its copies
    for rank, got in enumerate(ranks):
        (q0, q1), (p0, p1) = SPLIT_Q[rank], SPLIT_P[rank]
        assert torch.allclose(got["loss"], losses[rank].detach(), atol=1e-6)
        assert torch.allclose(got["q_grad"], q.grad[q0:q1], atol=1e-6)
        for local, row in enumerate(range(p0, p1)):
            summed[column[int(KEYS[row])]] += got["p_grad"][local]
    assert torch.allclose(summed, p_union.grad, atol=1e-6)

    # without keys the copy and the other rank's as-good prompts are negatives: a different loss
    (tmp_path / "plain").mkdir()
    plain = _gather_ranks(tmp_path / "plain")
    assert not torch.allclose(plain[0]["loss"], ranks[0]["loss"], atol=1e-3)
