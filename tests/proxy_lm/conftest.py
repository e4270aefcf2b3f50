"""Fixtures for the proxy LM tests: tiny LMs loaded in float32, small query/prompt sets."""

from __future__ import annotations

import pytest
from proxy_lm_data import make_prompts, make_queries

from flan_data.schema import Candidates, Prompt, Query
from proxy_lm import load_lm


@pytest.fixture(autouse=True)
def private_score_cache(tmp_path, monkeypatch):
    """Each test gets its own persistent score cache (never the user's)."""
    monkeypatch.setenv("UPRISE_SCORE_CACHE", str(tmp_path / "score-cache"))
    return tmp_path / "score-cache"


@pytest.fixture
def tiny_lm(tiny_lm_path):
    return load_lm(str(tiny_lm_path), dtype="float32")


@pytest.fixture
def scoring_data() -> tuple[dict[str, Query], dict[str, Prompt], list[Candidates]]:
    queries, prompts = make_queries(), make_prompts()
    candidates = [Candidates(q.id, [p.id for p in prompts[i % 2 : i % 2 + 3]])
                  for i, q in enumerate(queries)]
    return {q.id: q for q in queries}, {p.id: p for p in prompts}, candidates
