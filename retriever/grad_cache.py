"""Gradient caching (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup"): a contrastive loss over a large batch with the activation memory of a
small chunk.

Contract: `grad_cached_backward(embedders, inputs, loss_fn, chunk_size, backward)`
1. embeds every input (one token dict per tower, e.g. queries and prompts) in chunks of
   `chunk_size` rows without an autograd graph, recording the RNG state before each chunk;
2. computes `loss_fn(*embeddings)` on leaf copies of the embeddings and backpropagates it to
   them only (the embedding gradients: n x dim numbers, the "cache");
3. re-embeds each chunk with a graph under its recorded RNG state (dropout draws the same
   masks) and backpropagates that chunk's slice of the cached gradient into the parameters.
The parameters' `.grad` then equals what the plain approach gives when it embeds in the same
chunks (`loss_fn(*chunked embeddings).backward()`): exactly the full-batch gradient in eval
mode, and with dropout the same up to which rows share a dropout call. Peak activation memory
is one chunk's graph instead of the whole batch's; compute is one extra forward per chunk
(about 4/3 of the plain step). `backward(tensor, gradient)` is the hook that runs a backward
(Lightning's `manual_backward` in training, plain `Tensor.backward` otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

Embed = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class _RngState:
    """The CPU RNG state and, for a CUDA device, that device's: replayed for the re-forward."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Inside: the recorded state; after: the RNG state from before, untouched."""
        with torch.random.fork_rng(devices=[self.device] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def _rows(inputs: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: v[start:stop] for k, v in inputs.items()}


def _n_rows(inputs: dict[str, torch.Tensor]) -> int:
    return len(next(iter(inputs.values())))


def grad_cached_backward(
    embedders: Sequence[Embed],
    inputs: Sequence[dict[str, torch.Tensor]],
    loss_fn: Callable[..., torch.Tensor],
    chunk_size: int,
    backward: Callable[[torch.Tensor, torch.Tensor | None], None] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Accumulates d loss / d parameters into `.grad` (see the module docstring).

    Args:
        embedders: one function per input, token dict (rows, seq) -> (rows, dim) embeddings.
        inputs: the token dicts, all rows of the batch (padded once, sliced per chunk).
        loss_fn: embeddings (one (rows, dim) tensor per input, in order) -> scalar loss.
        chunk_size: rows per forward pass (>= 1); the memory knob.
        backward: `backward(tensor, gradient)`; default `tensor.backward(gradient)`.

    Returns:
        (the loss, detached; the embeddings, detached, one per input).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}; expected a positive number of rows.")
    if len(embedders) != len(inputs):
        raise ValueError(f"{len(embedders)} embedders for {len(inputs)} inputs; pass one each.")
    backward = backward or (lambda t, g: t.backward(g))
    states: list[list[tuple[int, int, _RngState]]] = []
    cached: list[torch.Tensor] = []
    with torch.no_grad():
        for embed, tokens in zip(embedders, inputs, strict=True):
            device = next(iter(tokens.values())).device
            parts, spans = [], []
            for start in range(0, _n_rows(tokens), chunk_size):
                stop = min(start + chunk_size, _n_rows(tokens))
                spans.append((start, stop, _RngState(device)))
                parts.append(embed(_rows(tokens, start, stop)))  # (chunk, dim)
            states.append(spans)
            cached.append(torch.cat(parts).requires_grad_(True))  # (rows, dim) leaf
    loss = loss_fn(*cached)
    grads = torch.autograd.grad(loss, cached, allow_unused=True)  # one (rows, dim) per input
    for embed, tokens, spans, grad in zip(embedders, inputs, states, grads, strict=True):
        if grad is None:
            continue
        for start, stop, rng in spans:
            with rng.replay():
                emb = embed(_rows(tokens, start, stop))  # (chunk, dim), with a graph
            backward(emb, grad[start:stop])
    return loss.detach(), [c.detach() for c in cached]
