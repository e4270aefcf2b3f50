"""The grouped, prefix-shared scoring engine behind `continuation_losses`.

Contract: `score_items(lm, items, groups, batch_size)` returns, for every tokenized item (full
context tokens + option tokens, see `likelihood.tokenize`), the mean per-token NLL of each
option, equal to scoring each context + option alone and unpadded (up to float rounding).

How the work is cut (each token runs through the LM once per stage it belongs to):

    stage 1  prefix   the longest common token prefix of a group's contexts (a prompt's
                      `prompt + SEP` in `score_candidates`), run ONCE per group chunk
    stage 2  suffix   each context's remaining tokens but its last, off a copy of the prefix
                      KV cache selected per item
    stage 3  options  [last context token] + option tokens, off the item's KV cache; logits
                      only at the positions that predict option tokens

Contexts are tokenized whole and the prefix is cut from the token lists, so a merge across
the prompt/query boundary cannot change any result. Groups larger than `batch_size` run in
chunks (one prefix pass each); chunks are packed into batches of at most `batch_size` items,
longest prefix first. Stage-2 inputs are right-padded, then every row's KV cache is rotated so
that its real tokens end at the last column before stage 3: real tokens stay contiguous, which
keeps index-based local attention (GPT-Neo) exact. Padded positions get position id 0 and are
masked. Only plain `DynamicLayer` caches can be gathered; `supports(cache)` says so.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

OPTION_ROWS_PER_ITEM = 4
"""Stage 3 runs at most `OPTION_ROWS_PER_ITEM * batch_size` option rows per forward pass."""


@dataclass
class Segment:
    """One prefix pass shared by `items` (indices into the item list)."""

    prefix: list[int]
    items: list[int]


def plan(items: Sequence[Any], groups: Sequence[Hashable] | None,
         batch_size: int) -> list[list[Segment]]:
    """Batches of segments; every batch holds at most `batch_size` items."""
    by_key: dict[Hashable, list[int]] = defaultdict(list)
    for i in range(len(items)):
        by_key[groups[i] if groups is not None else ("__alone__", i)].append(i)
    segments = []
    for members in by_key.values():
        members.sort(key=lambda i: len(items[i].context))
        for s in range(0, len(members), batch_size):
            chunk = members[s : s + batch_size]
            prefix = _common_prefix([items[i].context for i in chunk])
            if prefix or len(chunk) == 1:
                segments.append(Segment(prefix, chunk))
            else:  # nothing shared (e.g. left-truncated contexts): each item alone
                segments += [Segment(items[i].context[:-1], [i]) for i in chunk]
    segments.sort(key=lambda seg: len(seg.prefix), reverse=True)
    batches: list[list[Segment]] = []
    filled = batch_size
    for seg in segments:
        if filled + len(seg.items) > batch_size:
            batches.append([])
            filled = 0
        batches[-1].append(seg)
        filled += len(seg.items)
    return batches


def _common_prefix(contexts: list[list[int]]) -> list[int]:
    """Longest common token prefix, leaving every context at least its last token."""
    first = contexts[0]
    n = min(len(c) for c in contexts) - 1
    for c in contexts[1:]:
        k = 0
        while k < n and c[k] == first[k]:
            k += 1
        n = k
    return first[:n]


def stage_tokens(items: Sequence[Any], batches: list[list[Segment]]) -> dict[str, int]:
    """Real (unpadded) tokens each stage runs: the engine's work, for benchmarks."""
    prefix = sum(len(seg.prefix) for b in batches for seg in b)
    suffix = sum(len(items[i].context) - 1 - len(seg.prefix)
                 for b in batches for seg in b for i in seg.items)
    options = sum(1 + len(o) for it in items for o in it.options)
    return {"prefix": prefix, "suffix": suffix, "options": options,
            "total": prefix + suffix + options}


def supports(cache: Any) -> bool:
    """Whether `cache` is a DynamicCache of plain full-attention layers (rows can be gathered)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def score_batch(lm: Any, items: Sequence[Any], batch: list[Segment],
                batch_size: int) -> dict[int, list[float]] | None:
    """Losses of the batch's items, by item index; None when the model's cache can't be shared."""
    pad, device = lm.tokenizer.pad_token_id, lm.device
    cache, mask = _run_prefixes(lm, [seg.prefix for seg in batch], pad, device)
    if cache is not None and not supports(cache):
        return None
    order = [i for seg in batch for i in seg.items]
    seg_row = torch.tensor([k for k, seg in enumerate(batch) for _ in seg.items], device=device)
    suffixes = [items[i].context[len(seg.prefix) : -1] for seg in batch for i in seg.items]
    starts = [len(seg.prefix) for seg in batch for _ in seg.items]
    cache, mask, shift = _run_suffixes(lm, cache, mask[seg_row], seg_row, suffixes, starts, pad)
    if cache is not None and not supports(cache):
        return None
    results = {i: [0.0] * len(items[i].options) for i in order}
    rows = [(k, j) for k, i in enumerate(order) for j in range(len(items[i].options))]
    rows.sort(key=lambda kj: len(items[order[kj[0]]].options[kj[1]]))
    step = OPTION_ROWS_PER_ITEM * batch_size
    for s in range(0, len(rows), step):
        chunk = rows[s : s + step]
        sel = torch.tensor([k for k, _ in chunk], device=device)
        seqs = [[items[order[k]].context[-1], *items[order[k]].options[j]] for k, j in chunk]
        ends = torch.tensor([len(items[order[k]].context) - 1 for k, _ in chunk], device=device)
        nll = _run_options(lm, gather_rows(cache, sel, shift[sel]), _roll(mask[sel], shift[sel]),
                           seqs, ends, pad)  # (rows, width - 1)
        for r, (k, j) in enumerate(chunk):
            n = len(seqs[r]) - 1
            results[order[k]][j] = float(nll[r, :n].sum() / n)
    return results


def _run_prefixes(lm: Any, prefixes: list[list[int]], pad: int,
                  device: Any) -> tuple[Any, torch.Tensor]:
    """Stage 1: left-padded prefixes; returns their KV cache (None if all empty) and mask."""
    width = max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), width), pad, dtype=torch.long)  # (segments, width)
    mask = torch.zeros_like(ids)
    for k, p in enumerate(prefixes):
        if p:
            ids[k, width - len(p) :] = torch.tensor(p)
            mask[k, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    if width == 0:
        return None, mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (segments, width)
    out = _forward(lm, ids, mask, positions, None, keep=torch.empty(0, dtype=torch.long))
    return out.past_key_values, mask


def _run_suffixes(lm: Any, cache: Any, prefix_mask: torch.Tensor, seg_row: torch.Tensor,
                  suffixes: list[list[int]], starts: list[int],
                  pad: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Stage 2: right-padded suffixes off each item's copy of its prefix cache. Returns the
    items' cache, mask and the right shift that makes each row's real tokens end last."""
    device = prefix_mask.device
    width = max(len(s) for s in suffixes)
    cache = gather_rows(cache, seg_row, None)
    shift = torch.tensor([width - len(s) for s in suffixes], device=device)  # (items,)
    if width == 0:
        return cache, prefix_mask, shift
    ids, sub_mask = _right_pad(suffixes, width, pad, device)  # (items, width)
    start = torch.tensor(starts, device=device)
    positions = (start[:, None] + torch.arange(width, device=device)) * sub_mask
    mask = torch.cat([prefix_mask, sub_mask], dim=-1)  # (items, prefix + width)
    out = _forward(lm, ids, mask, positions, cache, keep=torch.empty(0, dtype=torch.long))
    return out.past_key_values, mask, shift


def _run_options(lm: Any, cache: Any, ctx_mask: torch.Tensor, seqs: list[list[int]],
                 ends: torch.Tensor, pad: int) -> torch.Tensor:
    """Stage 3: NLL (rows, width - 1) of option tokens given [last context token] + option."""
    width = max(len(s) for s in seqs)
    ids, opt_mask = _right_pad(seqs, width, pad, ctx_mask.device)  # (rows, width)
    positions = (ends[:, None] + torch.arange(width, device=ids.device)) * opt_mask
    mask = torch.cat([ctx_mask, opt_mask], dim=-1)  # (rows, ctx + width)
    keep = torch.arange(width - 1)
    logits = _forward(lm, ids, mask, positions, cache, keep=keep).logits  # (rows, width-1, vocab)
    if logits.shape[1] != width - 1:  # the model ignored logits_to_keep
        logits = logits[:, : width - 1]
    nll = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
    return nll * opt_mask[:, 1:]  # (rows, width - 1)


def _forward(lm: Any, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
             cache: Any, keep: torch.Tensor) -> Any:
    from proxy_lm.likelihood import keep_logits

    return lm.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                    past_key_values=cache, use_cache=True,
                    **keep_logits(lm.model, keep.to(ids.device)))


def _right_pad(seqs: list[list[int]], width: int, pad: int,
               device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)  # (rows, width)
    mask = torch.zeros_like(ids)
    for k, s in enumerate(seqs):
        if s:
            ids[k, : len(s)] = torch.tensor(s)
            mask[k, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _roll_index(shift: torch.Tensor, width: int) -> torch.Tensor:
    """Source column of each output column when rotating row r right by shift[r]."""
    cols = torch.arange(width, device=shift.device)
    return (cols[None, :] - shift[:, None]) % width  # (rows, width)


def _roll(mask: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return mask.gather(1, _roll_index(shift, mask.shape[1]))  # (rows, width)


def gather_rows(cache: Any, rows: torch.Tensor, shift: torch.Tensor | None) -> Any:
    """A new cache holding batch rows `rows` of `cache`, row r rotated right by shift[r] along
    the sequence; `cache` itself is untouched (its layers are shared by other rows)."""
    if cache is None:
        return None
    new = type(cache).__new__(type(cache))
    new.__dict__.update(cache.__dict__)
    new.layers = []
    for layer in cache.layers:
        copy = type(layer).__new__(type(layer))
        copy.__dict__.update(layer.__dict__)
        copy.keys, copy.values = layer.keys[rows], layer.values[rows]  # (rows, heads, seq, dim)
        if shift is not None and bool(shift.any()):
            rows_, heads, seq, dim = copy.keys.shape
            index = _roll_index(shift, seq)[:, None, :, None].expand(rows_, heads, seq, dim)
            copy.keys, copy.values = copy.keys.gather(2, index), copy.values.gather(2, index)
        new.layers.append(copy)
    return new
