"""Continuation likelihoods under a frozen causal LM: batched, length-sorted, prefix-shared.

Contract: `continuation_losses(lm, contexts, continuations)[i][j]` is the mean per-token
negative log-likelihood of the tokens of `" " + continuations[i][j]` (no special tokens) right
after the tokens of `contexts[i]` (the tokenizer's default special tokens). It equals scoring
each (context, continuation) alone, unpadded, up to float rounding.

Truncation: when a context plus its LONGEST continuation exceeds `lm.max_length`, the context
loses tokens from the left (a leading special token such as BOS is kept), but never below half
the window; continuations that still do not fit lose tokens from the right. All continuations of
one context therefore see the same context tokens, so their losses are comparable.

Prefix sharing: each batch of contexts runs once (left padded, explicit position ids), and the
continuations are scored off a batch-selected copy of its KV cache. Models whose cache cannot be
batch-selected fall back to scoring context + continuation as whole sequences.
"""

from __future__ import annotations

import copy
import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

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
) -> list[list[float]]:
    """Mean per-token NLL of each continuation given its context (see the module docstring)."""
    if len(contexts) != len(continuations):
        raise ValueError(
            f"got {len(contexts)} contexts but {len(continuations)} continuation lists; "
            "pass one list of continuations per context."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    items = tokenize(lm, contexts, continuations)
    order = sorted(range(len(items)), key=lambda i: len(items[i].context), reverse=True)
    results: list[list[float]] = [[] for _ in items]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    for batch in _progress(batches, progress, "scoring"):
        with torch.inference_mode():
            losses = _score_batch(lm, [items[i] for i in batch], batch_size)
        for i, row in zip(batch, losses, strict=True):
            results[i] = row
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


def _score_batch(lm: LanguageModel, items: list[_Item], batch_size: int) -> list[list[float]]:
    ids, mask = left_pad([it.context for it in items], lm.tokenizer.pad_token_id, lm.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (batch, ctx_len)
    out = lm.model(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
        **keep_logits(lm.model, _last(ids.shape[1], 1, ids.device)),
    )
    cache = out.past_key_values
    if not _can_select(cache):
        return _score_batch_whole(lm, items, batch_size)
    first_logp = F.log_softmax(out.logits[:, -1].float(), dim=-1)  # (batch, vocab)
    rows = [(r, j) for r, it in enumerate(items) for j in range(len(it.options))]
    rows.sort(key=lambda rj: len(items[rj[0]].options[rj[1]]))
    results = [[0.0] * len(it.options) for it in items]
    ctx_len = mask.sum(-1)  # (batch,)
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        opts = [items[r].options[j] for r, j in chunk]
        sel = torch.tensor([r for r, _ in chunk], device=ids.device)
        if max(map(len, opts)) == 1:  # single-token options: the context pass scored them
            nll = first_logp.new_zeros((len(opts), 0))  # (rows, 0)
        else:
            nll = _option_nll(lm, _select_cache(cache, sel), mask[sel], ctx_len[sel], opts)
        first = first_logp[sel].gather(-1, torch.tensor([[o[0]] for o in opts], device=ids.device))
        for k, (r, j) in enumerate(chunk):
            n = len(opts[k])
            results[r][j] = float((nll[k, : n - 1].sum() - first[k, 0]) / n)
    return results


def _option_nll(lm: LanguageModel, cache: Any, ctx_mask: torch.Tensor, ctx_len: torch.Tensor,
                opts: list[list[int]]) -> torch.Tensor:
    """NLL of option tokens 1.. given the cached context; (rows, longest - 1), 0 at padding."""
    width = max(len(o) for o in opts)
    ids = torch.full((len(opts), width), lm.tokenizer.pad_token_id, device=ctx_mask.device)
    opt_mask = torch.zeros_like(ids)
    for k, o in enumerate(opts):
        ids[k, : len(o)] = torch.tensor(o)
        opt_mask[k, : len(o)] = 1
    positions = ctx_len[:, None] + torch.arange(width, device=ids.device)  # (rows, width)
    mask = torch.cat([ctx_mask, opt_mask], dim=-1)  # (rows, ctx_len + width)
    logits = lm.model(
        input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
        use_cache=True,
    ).logits  # (rows, width, vocab)
    return _token_nll(logits[:, :-1], ids[:, 1:], opt_mask[:, 1:])


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


def _can_select(cache: Any) -> bool:
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(hasattr(layer, "batch_select_indices") for layer in layers)


def _select_cache(cache: Any, rows: torch.Tensor) -> Any:
    """A copy of `cache` holding batch rows `rows`; the original is left untouched."""
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in selected.layers:
        layer.batch_select_indices(rows)  # rebinds keys/values to new tensors
    return selected


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch")
