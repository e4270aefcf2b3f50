"""The grouped, prefix-shared scoring engine behind `continuation_losses`.

Contract: `score_window(lm, items, window, batch_size)` returns, for every tokenized item of a
window (full context tokens + option tokens, see `likelihood.tokenize`), the mean per-token NLL
of each option, equal to scoring each context + option alone and unpadded (up to float
rounding); `plan(items, groups, batch_size)` cuts all items into windows.

How the work is cut (each token runs through the LM once per stage it belongs to):

    stage 1  prefix   the longest common token prefix of a group's contexts (a prompt's
                      `prompt + SEP` in `score_candidates`), run ONCE per group chunk
    stage 2  suffix   each context's remaining tokens, off a copy of its prefix KV cache; the
                      logits at the last context token score every option's FIRST token
    stage 3  options  option tokens but the last, off the item's KV cache, only for options
                      of two or more tokens (single-token options cost no extra pass)

Contexts are tokenized whole and the prefix is cut from the token lists, so a merge across
the prompt/query boundary cannot change any result. Groups larger than `batch_size` run in
chunks (one prefix pass each); a group of one, or one whose contexts share nothing, runs its
contexts whole in stage 2.

Batching: segments (group chunks), sorted by prefix length, fill windows of up to
`WINDOW * batch_size` items. A window runs its prefixes in batches of `batch_size` segments and
keeps their caches; its items, re-sorted by suffix length, then run stages 2 and 3 in batches
of `batch_size`, so suffix padding is small although a group's queries differ in length.

Alignment: stage 2 rows end together, so one logit column serves every row. A row whose
suffix is `shift` tokens shorter than the batch's longest re-runs its prefix's last `shift`
tokens in stage 2 (its cached copy is rotated right by `shift` and those columns masked), so
the slots that would be padding do useful work, and every row's real tokens stay contiguous,
which keeps index-based local attention (GPT-Neo) exact. Cache columns masked in every row are
cut, so no pass is longer than its longest real row (models with a hard window, like GPT-Neo,
need that). Padded positions get position id 0 and are masked. Only plain `DynamicLayer`
caches can be gathered (`kv_cache.supports`); `score_window` returns None for others.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from proxy_lm.kv_cache import (
    cache_of,
    forward,
    gather_rows,
    leading_masked,
    left_pad,
    roll,
    stack_rows,
    supports,
)

WINDOW = 16
"""A window holds up to `WINDOW * batch_size` items and keeps the prefix caches of its shared
segments (at most half as many, each of two items or more) while they run. Larger windows sort
suffixes better (on the benchmark's pairs, refill falls from 14% of the tokens at 4 to 6% at
16, 2% at 64) at the cost of that memory."""
OPTION_ROWS_PER_ITEM = 4
"""Stage 3 runs at most `OPTION_ROWS_PER_ITEM * batch_size` option rows per forward pass."""


@dataclass
class Segment:
    """One prefix pass shared by `items` (indices into the item list); no pass when empty."""

    prefix: list[int]
    items: list[int]


@dataclass
class Row:
    """One stage-2 row: item `item` of window segment `seg`, re-running `refill` prefix tokens."""

    seg: int
    item: int
    refill: int = 0


def plan(items: Sequence[Any], groups: Sequence[Hashable] | None,
         batch_size: int) -> list[list[Segment]]:
    """Windows of segments, each holding at most `WINDOW * batch_size` items."""
    by_key: dict[Hashable, list[int]] = defaultdict(list)
    for i in range(len(items)):
        by_key[groups[i] if groups is not None else ("__alone__", i)].append(i)
    segments = []
    for members in by_key.values():
        members.sort(key=lambda i: len(items[i].context))
        for s in range(0, len(members), batch_size):
            chunk = members[s : s + batch_size]
            prefix = _common_prefix([items[i].context for i in chunk]) if len(chunk) > 1 else []
            if prefix or len(chunk) == 1:
                segments.append(Segment(prefix, chunk))
            else:  # nothing shared (e.g. left-truncated contexts): each item alone
                segments += [Segment([], [i]) for i in chunk]
    segments.sort(key=lambda seg: (len(seg.prefix), max(len(items[i].context)
                                                        for i in seg.items)), reverse=True)
    windows: list[list[Segment]] = []
    room = 0
    for seg in segments:
        if len(seg.items) > room:
            windows.append([])
            room = WINDOW * batch_size
        windows[-1].append(seg)
        room -= len(seg.items)
    return windows


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


def suffix_batches(items: Sequence[Any], window: list[Segment], batch_size: int) -> list[list[Row]]:
    """The window's stage-2 batches: rows sorted by suffix length, with their refills."""
    rows = [Row(k, i) for k, seg in enumerate(window) for i in seg.items]
    rows.sort(key=lambda r: len(items[r.item].context) - len(window[r.seg].prefix), reverse=True)
    batches = [rows[s : s + batch_size] for s in range(0, len(rows), batch_size)]
    for batch in batches:
        width = max(len(items[r.item].context) - len(window[r.seg].prefix) for r in batch)
        for r in batch:
            plen = len(window[r.seg].prefix)
            r.refill = min(width - (len(items[r.item].context) - plen), plen)
    return batches


def stage_tokens(items: Sequence[Any], windows: list[list[Segment]],
                 batch_size: int) -> dict[str, int]:
    """Real (unpadded) tokens each stage runs: the engine's work, for benchmarks. `refill`
    counts prefix tokens run again in stage 2 where the alternative was padding."""
    prefix = sum(len(seg.prefix) for w in windows for seg in w)
    suffix = sum(len(items[i].context) - len(seg.prefix) for w in windows for seg in w
                 for i in seg.items)
    refill = sum(r.refill for w in windows for b in suffix_batches(items, w, batch_size)
                 for r in b)
    options = sum(len(o) - 1 for it in items for o in it.options)
    return {"prefix": prefix, "suffix": suffix, "refill": refill, "options": options,
            "total": prefix + suffix + refill + options}


def score_window(lm: Any, items: Sequence[Any], window: list[Segment],
                 batch_size: int) -> dict[int, list[float]] | None:
    """Losses of the window's items, by item index; None when the model's cache can't be shared."""
    pad, device = lm.tokenizer.pad_token_id, lm.device
    caches, masks = [], []
    for s in range(0, len(window), batch_size):
        cache, mask = _run_prefixes(lm, [seg.prefix for seg in window[s : s + batch_size]], pad,
                                    device)
        if cache is not None and not supports(cache):
            return None
        caches.append(cache)
        masks.append(mask)
    prefix_cache, prefix_mask = stack_rows(caches, masks)  # (segments, widest prefix)
    results: dict[int, list[float]] = {}
    for batch in suffix_batches(items, window, batch_size):
        losses = _score_rows(lm, items, window, batch, prefix_cache, prefix_mask, batch_size)
        if losses is None:
            return None
        results.update(losses)
    return results


def _score_rows(lm: Any, items: Sequence[Any], window: list[Segment], batch: list[Row],
                prefix_cache: Any, prefix_mask: torch.Tensor,
                batch_size: int) -> dict[int, list[float]] | None:
    """Stages 2 and 3 for one batch of rows."""
    pad, device = lm.tokenizer.pad_token_id, lm.device
    starts = [len(window[r.seg].prefix) - r.refill for r in batch]
    inputs = [items[r.item].context[s:] for r, s in zip(batch, starts, strict=True)]
    seg_row = torch.tensor([r.seg for r in batch], device=device)
    refill = torch.tensor([r.refill for r in batch], device=device)
    cache, mask, first = _run_suffixes(lm, prefix_cache, prefix_mask, seg_row, refill, inputs,
                                       starts, pad)
    if not supports(cache):
        return None
    order = [r.item for r in batch]
    rows = [(k, j) for k, i in enumerate(order) for j in range(len(items[i].options))]
    row_k = torch.tensor([k for k, _ in rows], device=device)
    token0 = torch.tensor([items[order[k]].options[j][0] for k, j in rows], device=device)
    first_nll = -F.log_softmax(first.float(), dim=-1)[row_k, token0]  # (rows,)
    results = {i: [0.0] * len(items[i].options) for i in order}
    for (k, j), value in zip(rows, first_nll.tolist(), strict=True):
        results[order[k]][j] = value
    multi = [(k, j) for k, j in rows if len(items[order[k]].options[j]) > 1]
    multi.sort(key=lambda kj: len(items[order[kj[0]]].options[kj[1]]))
    lengths = [len(items[i].context) for i in order]
    for chunk in _option_chunks(multi, items, order, lengths, OPTION_ROWS_PER_ITEM * batch_size,
                                lm.max_length):
        sel = torch.tensor([k for k, _ in chunk], device=device)
        seqs = [items[order[k]].options[j] for k, j in chunk]
        start = mask.shape[1] - max(lengths[k] for k, _ in chunk)
        ends = torch.tensor([lengths[k] for k, _ in chunk], device=device)
        nll = _run_options(lm, gather_rows(cache, sel, None, start), mask[sel, start:], seqs,
                           ends, pad)  # (rows, width)
        for (k, j), rest, seq in zip(chunk, nll.sum(-1).tolist(), seqs, strict=True):
            results[order[k]][j] = (results[order[k]][j] + rest) / len(seq)
    return results


def _option_chunks(rows: list[tuple[int, int]], items: Sequence[Any], order: list[int],
                   lengths: list[int], step: int, window: int) -> list[list[tuple[int, int]]]:
    """Consecutive runs of `rows` (sorted by option length) of at most `step` rows whose longest
    context plus longest option input stays within the LM window."""
    chunks: list[list[tuple[int, int]]] = []
    ctx = 0
    for k, j in rows:
        width = len(items[order[k]].options[j]) - 1
        if chunks and len(chunks[-1]) < step and max(ctx, lengths[k]) + width <= window:
            chunks[-1].append((k, j))
            ctx = max(ctx, lengths[k])
        else:
            chunks.append([(k, j)])
            ctx = lengths[k]
    return chunks


def _run_prefixes(lm: Any, prefixes: list[list[int]], pad: int,
                  device: Any) -> tuple[Any, torch.Tensor]:
    """Stage 1: left-padded prefixes; returns their KV cache (None if all empty) and mask."""
    ids, mask = left_pad(prefixes, pad, device)  # (segments, width)
    if ids.shape[1] == 0:
        return None, mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (segments, width)
    out = forward(lm.model, ids, mask, positions, None, keep=torch.empty(0, dtype=torch.long))
    return cache_of(out), mask


def _run_suffixes(lm: Any, cache: Any, prefix_mask: torch.Tensor, seg_row: torch.Tensor,
                  refill: torch.Tensor, inputs: list[list[int]], starts: list[int],
                  pad: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Stage 2: left-padded inputs (refilled prefix tail + suffix) off each row's copy of its
    prefix cache, rotated right by its refill. Returns the rows' cache, its mask (rows end
    together) and the logits (rows, vocab) at the last column."""
    device = prefix_mask.device
    mask = roll(prefix_mask[seg_row], refill)  # (rows, prefix width)
    cols = torch.arange(mask.shape[1], device=device)
    mask = mask * (cols[None, :] >= refill[:, None])  # the rotated-in tail runs again
    lead = leading_masked(mask)
    cache = gather_rows(cache, seg_row, refill, lead)
    ids, sub_mask = left_pad(inputs, pad, device)  # (rows, width)
    width = ids.shape[1]
    first = torch.tensor(starts, device=device) - (width - sub_mask.sum(-1))  # (rows,)
    positions = (first[:, None] + torch.arange(width, device=device)).clamp(min=0) * sub_mask
    mask = torch.cat([mask[:, lead:], sub_mask], dim=-1)  # (rows, kept + width)
    out = forward(lm.model, ids, mask, positions, cache, keep=torch.tensor([width - 1]))
    return cache_of(out), mask, out.logits[:, -1]


def _run_options(lm: Any, cache: Any, ctx_mask: torch.Tensor, options: list[list[int]],
                 ends: torch.Tensor, pad: int) -> torch.Tensor:
    """Stage 3: NLL (rows, width) of option tokens 1.. given the context and option token 0;
    each option runs all its tokens but the last, right after its row's context."""
    width = max(len(o) for o in options) - 1
    ids, opt_mask = _right_pad([o[:-1] for o in options], width, pad, ctx_mask.device)
    targets, _ = _right_pad([o[1:] for o in options], width, pad, ctx_mask.device)
    positions = (ends[:, None] + torch.arange(width, device=ids.device)) * opt_mask
    mask = torch.cat([ctx_mask, opt_mask], dim=-1)  # (rows, ctx + width)
    logits = forward(lm.model, ids, mask, positions, cache, keep=torch.arange(width)).logits
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    return nll * opt_mask  # (rows, width)


def _right_pad(seqs: list[list[int]], width: int, pad: int,
               device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask, both (rows, width)."""
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for k, s in enumerate(seqs):
        ids[k, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[k, : len(s)] = 1
    return ids.to(device), mask.to(device)
