"""The evaluated LM behind one interface, whether it runs here or behind an HTTP server.

Contract: a `Predictor` has a `name` and `predict(queries, demonstrations, batch_size=,
max_new_tokens=, progress=)` returning one `flan_data.Prediction` per query, in order, where
`demonstrations[i]` holds query i's prompt texts, best LAST (empty: zero-shot); generation stops
after `max_new_tokens` new tokens (None: each query's task budget, `flan_data.answer_budget`).
`on_answers(positions, predictions)`, when given, receives answers as they become final (a cache
stores them before the call returns, so a killed evaluation keeps them).
`LocalLM` wraps a loaded `proxy_lm.LanguageModel` (choices by likelihood, generation by greedy
decoding: `proxy_lm.predict`); `api_lm.ApiLM` asks an OpenAI-compatible server (generation,
replies mapped to options). Evaluation, calibration and the CLI see only this interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flan_data import Prediction, Query

OnAnswers = Callable[[list[int], list[Prediction]], None]
"""Receives (positions in the call's query list, their final predictions)."""


class Predictor(Protocol):
    @property
    def name(self) -> str: ...

    def predict(self, queries: list[Query], demonstrations: list[list[str]],
                batch_size: int = 16, max_new_tokens: int | None = None,
                progress: bool = True, on_answers: OnAnswers | None = None
                ) -> list[Prediction]: ...


@dataclass(frozen=True)
class LocalLM:
    """A `proxy_lm.LanguageModel` as a `Predictor`; `lm` stays reachable for scoring."""

    lm: Any

    @property
    def name(self) -> str:
        return self.lm.name

    def predict(self, queries: list[Query], demonstrations: list[list[str]],
                batch_size: int = 16, max_new_tokens: int | None = None,
                progress: bool = True, on_answers: OnAnswers | None = None
                ) -> list[Prediction]:
        from proxy_lm import predict

        return predict(self.lm, queries, demonstrations, batch_size=batch_size,
                       max_new_tokens=max_new_tokens, progress=progress, on_answers=on_answers)
