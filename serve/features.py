"""`query_features`: what a retriever's query route takes as input, built in one place.

Contract: `query_features(encoder, queries)` tokenises the queries with the query route's
preprocessing and prompt (`encoder.preprocess(..., task="query")`) and moves the tensors to the
encoder's device. Both query paths, the library forward and `serve.lean_bert`'s, and the lean
path's probe use it, so they always see the same input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def query_features(encoder: Any, queries: Sequence[str]) -> dict[str, Any]:
    """The query route's input features (tokenised with its prompt) on the encoder's device."""
    from sentence_transformers.util import batch_to_device

    features = encoder.preprocess(list(queries), prompt=encoder.prompts.get("query"),
                                  task="query")
    return batch_to_device(features, encoder.device)
