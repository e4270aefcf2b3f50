"""A persistent, content-addressed cache of option losses, shared by every scoring run.

Contract: `ScoreCache.for_lm(lm, root)` opens the cache of one LM; `get(keys)` returns the
cached losses of the keys it holds; `put(entries)` stores new ones durably. Scoring the same
pairs again, in any output folder, by any process, then runs no forward pass.

Keys. An entry is keyed by `pair_key(template, context, continuations)`: a SHA-256 of the
query's template id, the full LM context (`join_context([prompt.text], query.input)`, so the
prompt text, the separator and the query input) and the continuations (answer options, or
the gold reference). Entries live in a namespace per LM identity: a SHA-256 of the model
config, dtype, token window, a sample of every weight tensor (the first 64 values, so new
weights behind the same path get a new namespace), the tokenizer and `ENGINE_VERSION`. The
LM's name is not part of it: the same checkpoint under two paths shares entries.

Layout, atomicity and damage: `proxy_lm.segment_cache` (`<root>/<namespace>/seg-*.jsonl`, one
`{"k": key, "l": [losses...]}` per line). `root` defaults to `$UPRISE_SCORE_CACHE`, else
`$UPRISE_CACHE/scores` (`~/.cache/uprise`). A damaged entry (not a non-empty list of numbers)
is skipped with a warning and its pair is computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from proxy_lm.loading import LanguageModel
from proxy_lm.paths import cache_root
from proxy_lm.segment_cache import SegmentCache, namespace

log = logging.getLogger(__name__)

ENGINE_VERSION = 1
"""Bump when the loss definition changes; old entries then stop matching."""


def default_root() -> Path:
    env = os.environ.get("UPRISE_SCORE_CACHE")
    return Path(env).expanduser() if env else cache_root() / "scores"


def pair_key(template: int, context: str, continuations: list[str]) -> str:
    payload = json.dumps([template, context, continuations], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def lm_identity(lm: LanguageModel) -> dict[str, Any]:
    """What the namespace of `lm` hashes: config, dtype, window, weight sample, tokenizer."""
    weights = hashlib.sha256()
    for name, param in lm.model.state_dict().items():
        sample = param.detach().flatten()[:64].float().cpu().numpy().tobytes()
        weights.update(name.encode() + sample)
    tok = lm.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
    return {
        "engine_version": ENGINE_VERSION,
        "config": lm.model.config.to_diff_dict(),
        "dtype": str(lm.model.dtype),
        "max_length": lm.max_length,
        "weights_sample_sha256": weights.hexdigest(),
        "tokenizer_sha256": hashlib.sha256(vocab.encode()).hexdigest(),
        "pad_token_id": tok.pad_token_id,
        "example_name": lm.name,
    }


def hashed_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """What a namespace hashes of `lm_identity`: everything but the name the LM was loaded by."""
    return {k: v for k, v in identity.items() if k != "example_name"}


class ScoreCache(SegmentCache):
    """One LM's namespace of cached option losses (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__(folder, "score cache", _losses)

    @classmethod
    def for_lm(cls, lm: LanguageModel, root: str | Path | None = None) -> ScoreCache:
        identity = lm_identity(lm)
        folder = namespace(root or default_root(), identity, hashed_identity(identity))
        log.info("score cache: %s", folder)
        return cls(folder)


def _losses(value: object) -> bool:
    """Whether a stored value is intact: a non-empty list of numbers."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value)
