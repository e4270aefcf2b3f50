"""A persistent cache of the evaluated LM's answers: a repeated or interrupted evaluation asks the
LM only for the answers it has not given yet.

Contract: `cached_predictor(lm, root)` wraps a `Predictor` in a `CachedPredictor` (same `name`,
same `predict`) that looks each (query, demonstrations) up before asking `lm`, asks it for the
missing ones in a single call (so an evaluation with an empty cache batches exactly as without
one) and stores the answers that call hands over (`on_answers`) at most `flush_seconds` after
they arrive, at a batch boundary, and the rest when the call returns or fails. What an
evaluation did before it was killed is kept, down to a method's last stored generation batch:
a rerun asks only for the rows whose batches had not been stored, and since generation cuts its
batches from the longest context, those rows form the same batches as in the killed run
(`proxy_lm.evaluate`). Also kept: the abstention calibration's answers, the zero-shot answers of
another seed's run on the same rows. Returns `lm` itself when `root` is False or when `lm` has
no stable identity.

Keys. An answer is keyed by a SHA-256 of `PREDICTION_VERSION`, the answer budget
(`max_new_tokens`), every field of the query (id, task, template, input, options, gold,
references) and the demonstrations in order. Namespaces (`proxy_lm.segment_cache`, under
`$UPRISE_PREDICTION_CACHE`, else `$UPRISE_CACHE/predictions`): a local LM's identity as the score
cache hashes it (config, dtype, window, weight sample, tokenizer: `proxy_lm.score_cache`); an
OpenAI-compatible server's model, URL and endpoint (a different model served under the same name
needs a new root or `--no-prediction-cache`). Values: `{"prediction", "text", "correct",
"parsed"}` of `flan_data.Prediction`; a damaged one is skipped and asked again.

Which batch computed an answer is not part of the key: padding can move a generated token in a
near-tie, as it does between two methods' batches without a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flan_data import Prediction, Query
from proxy_lm.paths import cache_root
from proxy_lm.segment_cache import SegmentCache, namespace
from uprise.evaluation.predictors import LocalLM, OnAnswers, Predictor

log = logging.getLogger(__name__)
PREDICTION_VERSION = 1
"""Bump when `proxy_lm.predict` or `ApiLM` answer differently for the same input."""
_FIELDS = ("prediction", "text", "correct", "parsed")


def default_root() -> Path:
    env = os.environ.get("UPRISE_PREDICTION_CACHE")
    return Path(env).expanduser() if env else cache_root() / "predictions"


def prediction_key(query: Query, demonstrations: list[str], max_new_tokens: int | None) -> str:
    payload = json.dumps([PREDICTION_VERSION, max_new_tokens, asdict(query), demonstrations],
                         ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def predictor_identity(lm: Predictor) -> dict[str, Any] | None:
    """What a predictor's namespace hashes, or None when it has no stable identity."""
    if isinstance(lm, LocalLM):
        from proxy_lm.score_cache import hashed_identity, lm_identity

        return {"local": hashed_identity(lm_identity(lm.lm))}
    identity = getattr(lm, "cache_identity", None)
    return {"server": identity} if isinstance(identity, dict) else None


def _answer(value: object) -> bool:
    """Whether a stored value is an intact answer."""
    return (isinstance(value, dict) and set(value) == set(_FIELDS)
            and isinstance(value["prediction"], int | str) and isinstance(value["text"], str)
            and isinstance(value["correct"], bool | None) and isinstance(value["parsed"], bool))


class CachedPredictor:
    """`lm` behind a prediction cache (see the module docstring)."""

    def __init__(self, lm: Predictor, cache: SegmentCache, flush_seconds: float = 60.0) -> None:
        self.lm, self.cache, self.flush_seconds = lm, cache, flush_seconds
        self.asked = 0
        """Answers asked of `lm` so far."""
        self.served = 0
        """Answers served from the cache so far."""

    @property
    def name(self) -> str:
        return self.lm.name

    def predict(self, queries: list[Query], demonstrations: list[list[str]],
                batch_size: int = 16, max_new_tokens: int | None = None,
                progress: bool = True, on_answers: OnAnswers | None = None
                ) -> list[Prediction]:
        keys = [prediction_key(q, list(d), max_new_tokens)
                for q, d in zip(queries, demonstrations, strict=True)]
        known = self.cache.get(keys)
        missing = [i for i, key in enumerate(keys) if key not in known]
        self.served += len(queries) - len(missing)
        log.info("prediction cache: %d of %d answers cached, asking %s for %d",
                 len(queries) - len(missing), len(queries), self.lm.name, len(missing))
        if on_answers is not None and len(missing) < len(queries):
            cached = [i for i, key in enumerate(keys) if key in known]
            on_answers(cached, [_prediction(queries[i], known[keys[i]]) for i in cached])
        if missing:
            store = _Store(self.cache, self.flush_seconds)

            def arrived(positions: list[int], answers: list[Prediction]) -> None:
                rows = [missing[p] for p in positions]
                store.add({keys[i]: _stored(a) for i, a in zip(rows, answers, strict=True)})
                if on_answers is not None:
                    on_answers(rows, answers)

            try:
                answers = self.lm.predict([queries[i] for i in missing],
                                          [demonstrations[i] for i in missing],
                                          batch_size=batch_size, max_new_tokens=max_new_tokens,
                                          progress=progress, on_answers=arrived)
                new = {keys[i]: _stored(a) for i, a in zip(missing, answers, strict=True)}
                store.add(new)  # those `lm` did not hand over as they came
            finally:
                store.flush()  # what arrived is final; a failed call keeps it too
            known.update(new)
            self.asked += len(missing)
        return [_prediction(q, known[key]) for q, key in zip(queries, keys, strict=True)]


def _stored(answer: Prediction) -> dict[str, Any]:
    return {f: getattr(answer, f) for f in _FIELDS}


def _prediction(query: Query, value: dict[str, Any]) -> Prediction:
    return Prediction(query_id=query.id, **value)


class _Store:
    """Answers waiting to be written: one segment at most every `flush_seconds`."""

    def __init__(self, cache: SegmentCache, flush_seconds: float) -> None:
        self.cache, self.flush_seconds = cache, flush_seconds
        self.pending: dict[str, Any] = {}
        self.seen: set[str] = set()
        self.last = time.monotonic()

    def add(self, entries: dict[str, Any]) -> None:
        self.pending.update({k: v for k, v in entries.items() if k not in self.seen})
        self.seen.update(entries)
        if time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.cache.put(self.pending)
            self.pending = {}
        self.last = time.monotonic()


def cache_summary(lm: Predictor) -> dict[str, Any] | None:
    """For a report: the cache folder and how many answers the LM was asked (None: no cache)."""
    if not isinstance(lm, CachedPredictor):
        return None
    return {"folder": str(lm.cache.folder), "answers_asked": lm.asked,
            "answers_from_cache": lm.served}


def cached_predictor(lm: Predictor, root: str | Path | bool | None = True) -> Predictor:
    """`lm` behind the prediction cache at `root` (True or None: `default_root()`; a path: that
    root; False: no cache, `lm` itself)."""
    if root is False:
        return lm
    identity = predictor_identity(lm)
    if identity is None:
        log.info("prediction cache: %s has no stable identity; answers are not cached", lm.name)
        return lm
    folder = namespace(default_root() if root in (True, None) else root,
                       {**identity, "example_name": lm.name}, identity)
    log.info("prediction cache: %s", folder)
    return CachedPredictor(lm, SegmentCache(folder, "prediction cache", _answer))
