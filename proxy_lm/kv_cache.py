"""Row-level surgery on Hugging Face KV caches, and the forward-call details that go with it.

Contract: `gather_rows` and `stack_rows` return NEW cache objects (the source caches are left
untouched, since other rows still read them); `supports(cache)` says whether a cache is made
of plain `DynamicLayer`s, the only kind these helpers can rebuild. `forward` runs one cached
pass with explicit position ids and logits only at the given columns; `cache_kwarg` /
`cache_of` hide the `past_key_values` -> `cache` rename of transformers 5.x; `keep_logits`
asks a model for logits at some positions only; `left_pad` lays token rows out for a pass.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F


def supports(cache: Any) -> bool:
    """Whether `cache` is a DynamicCache of plain full-attention layers (rows can be gathered)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def forward(model: Any, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
            cache: Any, keep: torch.Tensor) -> Any:
    """One cached forward pass computing logits only at columns `keep` of `ids`."""
    keep = keep.to(ids.device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                **{cache_kwarg(model): cache}, **keep_logits(model, keep))
    if out.logits.shape[1] != len(keep):  # the model ignored logits_to_keep
        out.logits = out.logits[:, keep]
    return out


def keep_logits(model: Any, positions: torch.Tensor) -> dict[str, Any]:
    """`logits_to_keep` kwargs computing logits at `positions` only, where the model takes it.

    An index tensor, not an int: an int slices a strided view of the hidden states, which
    makes the CPU bf16 matmul of the LM head ~100x slower (0.5 s for one position)."""
    params = inspect.signature(model.forward).parameters
    return {"logits_to_keep": positions} if "logits_to_keep" in params else {}


def left_pad(seqs: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask, both (rows, longest)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (rows, width)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[k, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def cache_kwarg(model: Any) -> str:
    """`cache` in recent transformers (5.x renamed it), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def roll_index(shift: torch.Tensor, width: int) -> torch.Tensor:
    """Source column of each output column when rotating row r right by shift[r]."""
    cols = torch.arange(width, device=shift.device)
    return (cols[None, :] - shift[:, None]) % width  # (rows, width)


def roll(mask: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """`mask` (rows, width) with row r rotated right by shift[r]."""
    if mask.shape[1] == 0:
        return mask
    return mask.gather(1, roll_index(shift, mask.shape[1]))


def leading_masked(mask: torch.Tensor) -> int:
    """How many leading columns of `mask` (rows, width) are 0 in every row."""
    used = (mask != 0).any(dim=0)  # (width,)
    return int(used.int().argmax()) if bool(used.any()) else mask.shape[1]


def _rebuilt(cache: Any, tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """A shallow copy of `cache` whose layer l holds keys/values `tensors[l]`."""
    new = type(cache).__new__(type(cache))
    new.__dict__.update(cache.__dict__)
    new.layers = []
    for layer, (keys, values) in zip(cache.layers, tensors, strict=True):
        copy = type(layer).__new__(type(layer))
        copy.__dict__.update(layer.__dict__)
        copy.keys, copy.values = keys, values
        new.layers.append(copy)
    return new


def gather_rows(cache: Any, rows: torch.Tensor, shift: torch.Tensor | None,
                start: int = 0) -> Any:
    """A new cache holding batch rows `rows` of `cache`, row r rotated right by shift[r] along
    the sequence, then its columns from `start` on."""
    if cache is None:
        return None
    rotate = shift is not None and bool(shift.any())
    tensors = []
    for layer in cache.layers:
        keys, values = layer.keys[rows], layer.values[rows]  # (rows, heads, seq, dim)
        if rotate:
            n, heads, seq, dim = keys.shape
            index = roll_index(shift, seq)[:, None, :, None].expand(n, heads, seq, dim)
            keys, values = keys.gather(2, index), values.gather(2, index)
        tensors.append((keys[:, :, start:], values[:, :, start:]))
    return _rebuilt(cache, tensors)


def stack_rows(caches: list[Any], masks: list[torch.Tensor]) -> tuple[Any, torch.Tensor]:
    """Caches (and their masks) of different widths as one: each left-padded with masked zero
    columns to the widest, rows concatenated in order. A None cache (rows with no tokens
    cached) becomes all-masked zero columns; the cache is None when all of them are."""
    width = max(m.shape[1] for m in masks)
    mask = torch.cat([F.pad(m, (width - m.shape[1], 0)) for m in masks])  # (rows, width)
    if all(c is None for c in caches):
        return None, mask
    if len(caches) == 1:
        return caches[0], mask
    ref = next(c for c in caches if c is not None)
    tensors = []
    for i, ref_layer in enumerate(ref.layers):
        pair = []
        for name in ("keys", "values"):
            like = getattr(ref_layer, name)  # (rows, heads, seq, dim)
            pair.append(torch.cat([
                like.new_zeros((m.shape[0], like.shape[1], width, like.shape[3])) if c is None
                else F.pad(getattr(c.layers[i], name), (0, 0, width - m.shape[1], 0))
                for c, m in zip(caches, masks, strict=True)]))
        tensors.append(tuple(pair))
    return _rebuilt(ref, tensors), mask
