"""Iterative mining (LLM-R, UDR): the next round's candidates from a trained retriever or BM25.

Contract: `mine_round(data_dir, retriever_dir, out_dir, top_k, n_random, seed)` reads a data
folder written by `uprise data` (or by an earlier round), and writes a new data folder with the
same pool, training and evaluation queries, whose candidates are, per training query, the
ranker's `top_k` prompts of the query's own task (never the query itself) followed by
`n_random` other same-task prompts drawn with a seed. The ranker is the trained retriever in
`retriever_dir`, or BM25 when `retriever_dir` is None (EPR's candidate source: an index per
task, so that a query's neighbours are ranked among its own task's prompts). Its manifest
records the round (`mining.round`, the previous round's + 1), the ranker and the settings; every
other key is the source's, so the held-out-cluster protocol and its leakage check carry over.
Score the new folder with `uprise score` (pairs seen in an earlier round come from the score
cache) and train on it; each round is its own folder, so every round's numbers stay side by side.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from flan_data import check_no_leakage, read_stage_data, write_stage_data
from flan_data.schema import Candidates, Prompt, Query, prepare_output_dir

log = logging.getLogger(__name__)


def mined_candidates(q_emb: np.ndarray, p_emb: np.ndarray, queries: list[Query],
                     pool: list[Prompt], top_k: int, n_random: int,
                     seed: int) -> list[Candidates]:
    """Per query: top_k same-task prompts by inner product, then n_random other same-task ones.

    q_emb: (n_queries, dim), p_emb: (n_pool, dim), rows in the order of `queries` and `pool`.
    """
    rows_of = _rows_by_task(pool)
    out = []
    for i, q in enumerate(queries):
        rows = rows_of.get(q.task, [])
        out.append(_top_then_random(q, rows, p_emb[rows] @ q_emb[i], pool, top_k, n_random,
                                    seed))  # scores: (n_same_task,)
    return out


def bm25_candidates(queries: list[Query], pool: list[Prompt], top_k: int, n_random: int,
                    seed: int) -> list[Candidates]:
    """Per query: top_k same-task prompts by BM25 over its task's prompts (query input against
    prompt text), then n_random other same-task ones."""
    from retriever.baselines import BM25Retriever

    rows_of, by_task = _rows_by_task(pool), defaultdict(list)
    for i, q in enumerate(queries):
        by_task[q.task].append(i)
    out: dict[int, Candidates] = {}
    for task, qs in by_task.items():
        rows = rows_of.get(task, [])
        scores = (BM25Retriever([pool[j] for j in rows]).scores([queries[i].input for i in qs])
                  if rows else np.zeros((len(qs), 0), dtype=np.float32))  # (n_task_q, n_rows)
        for i, row_scores in zip(qs, scores, strict=True):
            out[i] = _top_then_random(queries[i], rows, row_scores, pool, top_k, n_random, seed)
    return [out[i] for i in range(len(queries))]


def _rows_by_task(pool: list[Prompt]) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = defaultdict(list)
    for j, p in enumerate(pool):
        rows[p.task].append(j)
    return rows


def _top_then_random(q: Query, rows: list[int], scores: np.ndarray, pool: list[Prompt],
                     top_k: int, n_random: int, seed: int) -> Candidates:
    """The top_k of `rows` (pool indices of q's task) by `scores` (aligned with `rows`), ties
    broken by prompt id, never q itself; then n_random of the rest, seeded by q's id."""
    order = sorted((r for r in range(len(rows)) if pool[rows[r]].id != q.id),
                   key=lambda r: (-float(scores[r]), pool[rows[r]].id))
    top = [pool[rows[r]].id for r in order[:top_k]]
    rest = sorted(pool[rows[r]].id for r in order[top_k:])
    rng = random.Random(f"{seed}:mining:{q.id}")
    return Candidates(q.id, top + rng.sample(rest, min(n_random, len(rest))))


def mine_round(data_dir: str | Path, retriever_dir: str | Path | None, out_dir: str | Path,
               top_k: int = 5, n_random: int = 5, seed: int = 42, batch_size: int = 64,
               overwrite: bool = False) -> Path:
    """Writes the next round's data folder (see the module docstring); returns it."""
    from retriever.export import load_retriever_encoder

    if top_k < 1 or n_random < 0:
        raise ValueError(f"top_k={top_k}, n_random={n_random}; expected >= 1 and >= 0.")
    stage = read_stage_data(data_dir)
    out = prepare_output_dir(out_dir, overwrite)
    if retriever_dir is None:
        candidates = bm25_candidates(stage.train_queries, stage.pool, top_k, n_random, seed)
    else:
        st, _ = load_retriever_encoder(retriever_dir, device="cpu")
        q_emb = st.encode_query([q.input for q in stage.train_queries], batch_size=batch_size,
                                convert_to_numpy=True)  # (n_queries, dim)
        p_emb = st.encode_document([p.text for p in stage.pool], batch_size=batch_size,
                                   convert_to_numpy=True)  # (n_pool, dim)
        candidates = mined_candidates(q_emb, p_emb, stage.train_queries, stage.pool, top_k,
                                      n_random, seed)
    held_out = stage.manifest.get("held_out_cluster")
    if held_out:
        check_no_leakage(held_out, stage.pool, stage.train_queries, candidates)
    previous = stage.manifest.get("mining", {}).get("round", 0)
    manifest = {**stage.manifest, "n_candidates": top_k + n_random,
                "mining": {"round": previous + 1, "source": str(data_dir),
                           "ranker": "bm25" if retriever_dir is None else "retriever",
                           "retriever": None if retriever_dir is None else str(retriever_dir),
                           "top_k": top_k, "n_random": n_random, "seed": seed}}
    write_stage_data(dataclasses.replace(stage, candidates=candidates, manifest=manifest), out)
    log.info("mining round %d: %d queries x %d candidates -> %s", previous + 1,
             len(candidates), top_k + n_random, out)
    return out
