"""Continuation likelihoods under a frozen causal LM: batched, length-sorted, prefix-shared.

Contract: `continuation_losses(lm, contexts, continuations)[i][j]` is the mean per-token
negative log-likelihood of the tokens of `" " + continuations[i][j]` (no special tokens) right
after the tokens of `contexts[i]` (the tokenizer's default special tokens). It equals scoring
each (context, continuation) alone, unpadded, up to float rounding.

Truncation: when a context plus its LONGEST continuation exceeds `lm.max_length`, the context
loses tokens from the left (a leading special token such as BOS is kept), but never below half
the window; continuations that still do not fit lose tokens from the right. All continuations of
one context therefore see the same context tokens, so their losses are comparable.

Prefix sharing (`proxy_lm.shared_prefix`): contexts given the same `groups` key share their
longest common token prefix, which runs once; each context's remaining tokens run once, and
their last logits score every continuation's first token; longer continuations run their
other tokens off a row-gathered copy of that KV cache. Models whose cache cannot
be gathered (sliding-window or other special cache layers) fall back to scoring context +
continuation as whole left-padded sequences (`_score_batch_whole`).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from proxy_lm import shared_prefix
from proxy_lm.kv_cache import keep_logits, left_pad
from proxy_lm.loading import LanguageModel

log = logging.getLogger(__name__)


@dataclass
class _Item:
    context: list[int]
    options: list[list[int]]


def continuation_losses(
    lm: LanguageModel,
    contexts: list[str],
    continuations: list[list[str]],
    batch_size: int = 16,
    progress: bool = False,
    groups: Sequence[Hashable] | None = None,
) -> list[list[float]]:
    """Mean per-token NLL of each continuation given its context (see the module docstring).

    `groups[i]` (optional, e.g. the prompt id) names contexts that start alike: each group's
    longest common token prefix runs once. Results do not depend on `groups`."""
    if len(contexts) != len(continuations):
        raise ValueError(
            f"got {len(contexts)} contexts but {len(continuations)} continuation lists; "
            "pass one list of continuations per context."
        )
    if groups is not None and len(groups) != len(contexts):
        raise ValueError(
            f"got {len(groups)} group keys for {len(contexts)} contexts; pass one key per "
            "context (e.g. its prompt id) or groups=None."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    items = tokenize(lm, contexts, continuations)
    results: list[list[float]] = [[] for _ in items]
    bar = _progress_bar(len(items), progress)
    for window in shared_prefix.plan(items, groups, batch_size):
        with torch.inference_mode():
            losses = shared_prefix.score_window(lm, items, window, batch_size)
            if losses is None:  # the model's KV cache cannot be shared: whole sequences
                members = [i for seg in window for i in seg.items]
                rows = _score_batch_whole(lm, [items[i] for i in members], batch_size)
                losses = dict(zip(members, rows, strict=True))
        for i, row in losses.items():
            results[i] = row
        if bar is not None:
            bar.update(len(losses))
    if bar is not None:
        bar.close()
    return results


def tokenize(lm: LanguageModel, contexts: list[str], continuations: list[list[str]]) -> list[_Item]:
    """Token ids of every context and continuation, fitted to `lm.max_length`."""
    tok = lm.tokenizer
    ctx_ids = tok(list(contexts))["input_ids"] if contexts else []
    flat = [" " + c for conts in continuations for c in conts]
    flat_ids = tok(flat, add_special_tokens=False)["input_ids"] if flat else []
    start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    special = set(tok.all_special_ids)
    items, at = [], 0
    for i, (ctx, conts) in enumerate(zip(ctx_ids, continuations, strict=True)):
        if not conts:
            raise ValueError(f"context {i} has no continuations; give it at least one.")
        opts = flat_ids[at : at + len(conts)]
        at += len(conts)
        items.append(_fit(list(ctx) or [start_id], opts, lm.max_length, special))
    return items


def _fit(ctx: list[int], opts: list[list[int]], max_length: int, special: set[int]) -> _Item:
    longest = max(len(o) for o in opts)
    if len(ctx) + longest <= max_length:
        return _Item(ctx, opts)
    keep = max(max_length - longest, min(len(ctx), max_length // 2))
    head = ctx[:1] if ctx[0] in special and keep > 1 else []
    ctx = head + ctx[len(ctx) - keep + len(head) :]
    room = max_length - len(ctx)
    if longest > room:
        log.warning("a continuation of %d tokens was cut to %d to fit the LM window", longest, room)
    return _Item(ctx, [o[:room] for o in opts])


def _token_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token NLL (rows, n) of `targets` under `logits` (rows, n, vocab), 0 where mask is 0."""
    if targets.shape[1] == 0:
        return targets.new_zeros(targets.shape, dtype=torch.float)
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (rows, n)
    return nll * mask


def _score_batch_whole(lm: LanguageModel, items: list[_Item], batch_size: int) -> list[list[float]]:
    """Fallback without prefix sharing: each context + option runs as one left-padded row."""
    rows = [(r, j) for r, it in enumerate(items) for j in range(len(it.options))]
    results = [[0.0] * len(it.options) for it in items]
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        seqs = [items[r].context + items[r].options[j] for r, j in chunk]
        ids, mask = left_pad(seqs, lm.tokenizer.pad_token_id, lm.device)
        width = max(len(items[r].options[j]) for r, j in chunk)
        logits = lm.model(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            **keep_logits(lm.model, _last(ids.shape[1], width + 1, ids.device)),
        ).logits[:, -(width + 1) :]  # (rows, width + 1, vocab)
        nll = _token_nll(logits[:, :-1], ids[:, -width:], mask[:, -width:])  # (rows, width)
        for k, (r, j) in enumerate(chunk):
            n = len(items[r].options[j])
            results[r][j] = float(nll[k, width - n :].sum() / n)
    return results


def _last(length: int, n: int, device: Any) -> torch.Tensor:
    return torch.arange(length - n, length, device=device)  # (n,)


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar counting scored contexts (windows hold hundreds), or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="scoring", unit="context")
