"""Iterative mining (LLM-R, UDR): the next round's candidates from a trained retriever.

Contract: `mine_round(data_dir, retriever_dir, out_dir, top_k, n_random, seed)` reads a data
folder written by `uprise data` (or by an earlier round), and writes a new data folder with the
same pool, training and evaluation queries, whose candidates are, per training query, the
trained retriever's `top_k` prompts of the query's own task (never the query itself) followed by
`n_random` other same-task prompts drawn with a seed. Its manifest records the round
(`mining.round`, the previous round's + 1), the retriever and the settings; every other key is
the source's, so the held-out-cluster protocol and its leakage check carry over. Score the new
folder with `uprise score` (pairs seen in an earlier round come from the score cache) and train
on it; each round is its own folder, so every round's numbers stay side by side.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from flan_data import StageData, check_no_leakage, read_stage_data, write_stage_data
from flan_data.schema import Candidates, Prompt, Query, prepare_output_dir

log = logging.getLogger(__name__)


def mined_candidates(q_emb: np.ndarray, p_emb: np.ndarray, queries: list[Query],
                     pool: list[Prompt], top_k: int, n_random: int,
                     seed: int) -> list[Candidates]:
    """Per query: top_k same-task prompts by inner product, then n_random other same-task ones.

    q_emb: (n_queries, dim), p_emb: (n_pool, dim), rows in the order of `queries` and `pool`.
    """
    by_task: dict[str, list[int]] = defaultdict(list)
    for j, p in enumerate(pool):
        by_task[p.task].append(j)
    out = []
    for i, q in enumerate(queries):
        rows = [j for j in by_task.get(q.task, []) if pool[j].id != q.id]
        scores = p_emb[rows] @ q_emb[i]  # (n_same_task,)
        order = sorted(range(len(rows)), key=lambda r: (-float(scores[r]), pool[rows[r]].id))
        top = [pool[rows[r]].id for r in order[:top_k]]
        chosen = set(top)
        rest = sorted(pool[j].id for j in rows if pool[j].id not in chosen)
        rng = random.Random(f"{seed}:mining:{q.id}")
        out.append(Candidates(q.id, top + rng.sample(rest, min(n_random, len(rest)))))
    return out


def mine_round(data_dir: str | Path, retriever_dir: str | Path, out_dir: str | Path,
               top_k: int = 5, n_random: int = 5, seed: int = 42, batch_size: int = 64,
               overwrite: bool = False) -> Path:
    """Writes the next round's data folder (see the module docstring); returns it."""
    from retriever.export import load_retriever_encoder

    if top_k < 1 or n_random < 0:
        raise ValueError(f"top_k={top_k}, n_random={n_random}; expected >= 1 and >= 0.")
    stage = read_stage_data(data_dir)
    out = prepare_output_dir(out_dir, overwrite)
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
                           "retriever": str(retriever_dir), "top_k": top_k,
                           "n_random": n_random, "seed": seed}}
    write_stage_data(StageData(stage.pool, stage.train_queries, stage.eval_queries, candidates,
                               manifest), out)
    log.info("mining round %d: %d queries x %d candidates -> %s", previous + 1,
             len(candidates), top_k + n_random, out)
    return out
