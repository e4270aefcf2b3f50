"""Prompt-selection methods: the one list of their names and the functions behind them.

Contract: a *method* maps queries to demonstrations, `list[list[str]]`, one list per query with
the best prompt LAST (nearest the input; an empty list is zero-shot). `METHOD_NAMES` lists every
method `uprise eval` knows, in report order; `BASELINES` are those without a trained retriever
(the best of them by average is the report's "best baseline"). `build_methods` turns names into
methods; dense methods read an exported, indexed retriever directory, loaded once per directory
however many methods use it. `abstaining_prompts` gives no prompts when the trained retriever's
top score is below a threshold (calibrated in `abstain.py`; optionally one per answer kind,
`query_kind`); `hybrid_prompts` mixes the trained retriever with BM25 (`serve.hybrid`, the
weight chosen in `hybrid.py`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from flan_data import Prompt, Query

MethodName = Literal["zero_shot", "random", "bm25", "untrained", "trained", "trained+abstain",
                     "hybrid"]
METHOD_NAMES: tuple[MethodName, ...] = get_args(MethodName)
BASELINES: tuple[MethodName, ...] = ("zero_shot", "random", "bm25", "untrained")
"""Methods that use no trained retriever; the best of them by average is the 'best baseline'."""
ABSTAIN: MethodName = "trained+abstain"
HYBRID: MethodName = "hybrid"
DEFAULT_METHODS: tuple[MethodName, ...] = tuple(n for n in METHOD_NAMES
                                                if n not in (ABSTAIN, HYBRID))
"""What `uprise eval` runs unless told otherwise (`--abstain` adds `ABSTAIN`; `HYBRID`, the
trained retriever mixed with BM25 (`serve.hybrid`), runs when named in `--methods`)."""
SEARCH_DEPTH = 200
"""Hits searched per calibration query to find k prompts outside the query's own cluster."""

Method = Callable[[list[Query]], list[list[str]]]
log = logging.getLogger(__name__)


def zero_shot(queries: list[Query]) -> list[list[str]]:
    return [[] for _ in queries]


def random_prompts(pool: list[Prompt], k: int, seed: int) -> Method:
    """k pool prompts per query, a fresh seeded sample per query."""
    from retriever import RandomRetriever

    baseline = RandomRetriever(pool, seed=seed)

    def method(queries: list[Query]) -> list[list[str]]:
        hits = baseline.retrieve([q.input for q in queries], k)
        return [[pool[i].text for i, _ in reversed(row)] for row in hits]

    return method


def bm25_prompts(pool: list[Prompt], k: int) -> Method:
    """The k pool prompts with the highest BM25 score for the query input, best placed last."""
    from retriever import BM25Retriever

    baseline = BM25Retriever(pool)

    def method(queries: list[Query]) -> list[list[str]]:
        hits = baseline.retrieve([q.input for q in queries], k)
        return [[pool[i].text for i, _ in reversed(row)] for row in hits]

    return method


def retrieved_prompts(prompt_retriever: Any, k: int) -> Method:
    """Top-k prompts of a loaded `serve.PromptRetriever` (trained or not), best placed last."""

    def method(queries: list[Query]) -> list[list[str]]:
        hits = prompt_retriever.retrieve_batch([q.input for q in queries], k=k)
        return [[h.text for h in reversed(row)] for row in hits]

    return method


def hybrid_prompts(prompt_retriever: Any, k: int, weight: float) -> Method:
    """Top-k prompts of the trained retriever mixed with BM25 (`serve.hybrid`), best last."""
    from serve.hybrid import HybridRetriever

    hybrid = HybridRetriever(prompt_retriever, weight)

    def method(queries: list[Query]) -> list[list[str]]:
        hits = hybrid.retrieve_batch([q.input for q in queries], k=k)
        return [[h.text for h in reversed(row)] for row in hits]

    return method


def top_scores(prompt_retriever: Any, queries: list[Query], k: int,
               exclude_own_cluster: bool = False) -> list[tuple[float, list]]:
    """(top score, hits best first) per query; -inf for a query with no hit.

    `exclude_own_cluster`: drop prompts of the query's own cluster (searching deeper, up to
    `SEARCH_DEPTH` hits), so a training-cluster query sees the pool as a held-out one would.
    """
    depth = min(len(prompt_retriever.prompts), max(SEARCH_DEPTH, k)) if exclude_own_cluster else k
    hits = prompt_retriever.retrieve_batch([q.input for q in queries], k=depth)
    if exclude_own_cluster:
        hits = [[h for h in row if h.cluster != q.cluster][:k]
                for q, row in zip(queries, hits, strict=True)]
    return [(row[0].score if row else -math.inf, row) for row in hits]


def query_kind(query: Query) -> str:
    """'choice' (the query has answer options) or 'generation' (free text), as in `TaskKind`."""
    return "choice" if query.is_choice else "generation"


def abstaining_prompts(prompt_retriever: Any, k: int, threshold: float,
                       by_kind: Mapping[str, float] | None = None) -> Method:
    """The (trained) retriever's prompts, or none when its top score is below `threshold`, or
    below `by_kind[query_kind(query)]` where `by_kind` has the query's kind."""

    def method(queries: list[Query]) -> list[list[str]]:
        scored = top_scores(prompt_retriever, queries, k)
        limits = [(by_kind or {}).get(query_kind(q), threshold) for q in queries]
        out = [[h.text for h in reversed(row)] if top >= limit else []
               for (top, row), limit in zip(scored, limits, strict=True)]
        log.info("abstained on %d of %d queries (threshold %.4f, per kind %s)",
                 sum(not d for d in out), len(out), threshold, dict(by_kind or {}))
        return out

    return method


def check_method_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in METHOD_NAMES]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected names from {list(METHOD_NAMES)}")


def build_methods(
    names: list[str],
    pool: list[Prompt],
    k: int,
    seed: int,
    trained_dir: str | Path | None = None,
    untrained_dir: str | Path | None = None,
    abstain_threshold: float | None = None,
    hybrid_weight: float | None = None,
    abstain_by_kind: Mapping[str, float] | None = None,
) -> dict[str, Method]:
    """Named methods (`METHOD_NAMES`), in the order given. 'untrained' and 'trained' need their
    retriever directory, 'trained+abstain' the trained one and a calibrated threshold (and
    optionally one per answer kind, which wins for queries of that kind), 'hybrid' the trained
    one and a weight."""
    check_method_names(names)
    needs = {"untrained": untrained_dir, "trained": trained_dir, ABSTAIN: trained_dir,
             HYBRID: trained_dir}
    missing = [n for n in names if n in needs and needs[n] is None]
    if missing:
        raise ValueError(f"method(s) {missing} need a retriever directory; pass it (or drop them)")
    if ABSTAIN in names and abstain_threshold is None:
        raise ValueError(f"'{ABSTAIN}' needs a calibrated threshold; pass --abstain")
    if HYBRID in names and hybrid_weight is None:
        raise ValueError(f"'{HYBRID}' needs a weight (chosen on validation queries by "
                         "`uprise eval`, or --hybrid-weight)")
    loaded: dict[str, Any] = {}

    def retriever(folder: str | Path | None) -> Any:  # each directory loaded once
        from serve import PromptRetriever

        if str(folder) not in loaded:
            loaded[str(folder)] = PromptRetriever.from_pretrained(str(folder))
        return loaded[str(folder)]

    factories: dict[str, Callable[[], Method]] = {
        "zero_shot": lambda: zero_shot,
        "random": lambda: random_prompts(pool, k, seed),
        "bm25": lambda: bm25_prompts(pool, k),
        "untrained": lambda: retrieved_prompts(retriever(untrained_dir), k),
        "trained": lambda: retrieved_prompts(retriever(trained_dir), k),
        ABSTAIN: lambda: abstaining_prompts(retriever(trained_dir), k, float(abstain_threshold),
                                            abstain_by_kind),
        HYBRID: lambda: hybrid_prompts(retriever(trained_dir), k, float(hybrid_weight)),
    }
    return {name: factories[name]() for name in names}
