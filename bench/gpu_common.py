"""Shared pieces of the GPU check (bench/gpu_check.py): the `Sizes` that `--smoke` shrinks
(`FULL`, `SMOKE`, and the model shapes they name), the `Clock` deadline, and device helpers (CUDA
or not, peak and free memory, dtype names, the batch-size probe `probe_batch`).

Imported by bench/gpu_check.py and its section modules with bench/ on sys.path (bench/ is not a
package); imports none of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from scoring import GPT_NEO, timed

MEM_FRACTION = 0.8  # a probed batch may peak at this share of the free memory
BERT_BASE = dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                 intermediate_size=3072)
TINY_BERT = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64)
SHAPES = {**GPT_NEO, "tiny": dict(hidden_size=64, num_layers=2, num_heads=2)}


@dataclass(frozen=True)
class Sizes:
    """Everything `--smoke` shrinks."""

    lm: str  # a key of SHAPES
    n_queries: int  # scoring pairs = n_queries x n_candidates
    n_candidates: int
    precision_pairs: int  # pairs scored in fp32 by both methods, for the loss differences
    bf16_pairs: int  # the first of those scored in bf16 too
    batch_start: int  # batch-size probe: start, doubled up to batch_cap
    batch_cap: int
    bert: dict
    train_batches: tuple  # (queries, prompts per query) settings, each plain and grad-cached
    chunk: int  # grad-cache rows per forward
    max_steps: int  # timed optimizer steps per setting
    n_vectors: int
    n_search: int
    ivf: str
    nprobe: int
    matmul_n: int


FULL = Sizes(lm="gpt-neo-2.7b", n_queries=400, n_candidates=10, precision_pairs=32,
             bf16_pairs=32, batch_start=16, batch_cap=256, bert=BERT_BASE,
             train_batches=((16, 4), (128, 4)), chunk=32, max_steps=5, n_vectors=1_000_000,
             n_search=1000, ivf="IVF4096,Flat", nprobe=32, matmul_n=8192)
SMOKE = Sizes(lm="tiny", n_queries=14, n_candidates=2, precision_pairs=16, bf16_pairs=6,
              batch_start=2, batch_cap=8, bert=TINY_BERT, train_batches=((4, 2), (8, 2)),
              chunk=4, max_steps=2, n_vectors=10_000, n_search=100, ivf="IVF64,Flat", nprobe=8,
              matmul_n=512)


class Clock:
    """A wall-clock deadline; `slice(f)` is a sub-deadline at fraction f of the time left."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def slice(self, fraction: float) -> Clock:
        return Clock(max(0.0, self.left()) * fraction)


# ---------------------------------------------------------------- device helpers


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def reset_peak(device: str) -> None:
    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats()


def peak_bytes(device: str) -> int | None:
    return torch.cuda.max_memory_allocated() if is_cuda(device) else None


def free_bytes(device: str) -> int | None:
    return torch.cuda.mem_get_info()[0] if is_cuda(device) else None


def release(device: str) -> None:
    if is_cuda(device):
        torch.cuda.empty_cache()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def probe_batch(run, start: int, cap: int, clock: Clock, device: str) -> tuple[int, list[dict]]:
    """Doubles `run(batch)`'s batch from `start` until it peaks above MEM_FRACTION / 2 of the
    free memory (the next doubling could not fit), runs out of memory, or reaches `cap`; returns
    the largest batch that fit and the probe log. Without a memory reading (CPU): up to `cap`."""
    release(device)  # PyTorch's cached blocks count as used in mem_get_info
    free, batch, chosen, log = free_bytes(device), start, start, []
    while batch <= cap and (not log or clock.left() > 0):
        reset_peak(device)
        base = torch.cuda.memory_allocated() if is_cuda(device) else 0
        try:
            _, seconds = timed(lambda b=batch: run(b), device)
        except torch.cuda.OutOfMemoryError:
            release(device)
            log.append({"batch": batch, "oom": True})
            break
        extra = None if free is None else peak_bytes(device) - base
        log.append({"batch": batch, "seconds": seconds, "peak_extra_bytes": extra})
        if extra is not None and extra > MEM_FRACTION * free:
            break
        chosen = batch
        if extra is not None and 2 * extra > MEM_FRACTION * free:
            break
        batch *= 2
    return chosen, log
