"""The LM input UPRISE builds at inference: prompts (best last, nearest the input), then the query.

Contract: `build_context(query, hits, max_tokens, tokenizer)` joins the hits with
`flan_data.schema.join_context`, best-ranked prompt last. With `max_tokens`, the lowest-ranked
prompts are dropped first until the whole text fits; the query itself is never truncated (alone
and over budget, it is returned alone with a warning). Tokens are counted with the given Hugging
Face tokenizer (pass the *target* LM's) on the whole joined text without special tokens, or,
without a tokenizer, as whitespace-separated words (a rough, tokenizer-free proxy).
Deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flan_data.schema import join_context

log = logging.getLogger(__name__)


def build_context(
    query: str,
    hits: Sequence[Any],
    max_tokens: int | None = None,
    tokenizer: Any | None = None,
) -> str:
    """Joins `hits` (objects with `.rank` and `.text`, e.g. `RetrievedPrompt`) and `query`."""
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens={max_tokens!r}; expected a positive integer or None.")
    kept = sorted(hits, key=lambda h: h.rank)
    while True:
        text = join_context([h.text for h in reversed(kept)], query)
        if max_tokens is None or count_tokens(text, tokenizer) <= max_tokens:
            return text
        if not kept:
            log.warning("the query alone has %d tokens, over the budget of %d; returning it "
                        "without prompts", count_tokens(query, tokenizer), max_tokens)
            return query
        kept = kept[:-1]


def count_tokens(text: str, tokenizer: Any | None = None) -> int:
    """Tokens in `text`: the HF tokenizer's ids without special tokens, else whitespace words."""
    if tokenizer is None:
        return len(text.split())
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
