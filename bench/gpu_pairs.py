"""Scoring pairs of the GPU check (bench/gpu_check.py), read by its scoring and bi-encoder
sections: `Pairs` (context = prompt + SEP + query, prompt-id groups, where they came from) from
the offline flan_data mirror as bench/scoring.py `build_pairs` makes them, else synthetic word
salad of the same shape; `load_pairs` returns them in prompt order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from gpu_common import Sizes
from scoring import build_pairs

from flan_data import join_context, resolve_data_dir
from flan_data.schema import SEP

CLUSTERS, HELD_OUT = "sentiment,nli,paraphrase,commonsense", "closed_book_qa"


@dataclass
class Pairs:
    """Scoring pairs: context = prompt + SEP + query, `groups` = prompt ids, `source` = where
    they came from (the mirror's path or "synthetic")."""

    contexts: list[str]
    continuations: list[list[str]]
    groups: list[str]
    queries: list[str]
    prompts: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.contexts)

    def take(self, rows) -> Pairs:
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        return Pairs(pick(self.contexts), pick(self.continuations), pick(self.groups),
                     pick(self.queries), pick(self.prompts), self.source)


def load_pairs(sizes: Sizes, seed: int, tok, synthetic: bool) -> Pairs:
    """Mirror pairs when the mirror exists (and `synthetic` is off), else synthetic; in prompt
    order (stable), so any prefix of them holds whole prompt groups."""
    data_dir = None if synthetic else resolve_data_dir(None)
    pairs = (mirror_pairs(sizes, seed, data_dir) if data_dir is not None else
             synthetic_pairs(tok, sizes.n_queries, sizes.n_candidates, seed))
    return pairs.take(sorted(range(len(pairs)), key=lambda i: pairs.groups[i]))


def mirror_pairs(sizes: Sizes, seed: int, data_dir: Path) -> Pairs:
    args = SimpleNamespace(clusters=CLUSTERS, held_out=HELD_OUT, n_queries=sizes.n_queries,
                           n_candidates=sizes.n_candidates, pool_per_task=None,
                           max_prompt_chars=600, seed=seed)
    queries, contexts, continuations, groups = build_pairs(args)
    prompts = [c[: len(c) - len(SEP) - len(q.input)] for c, q in zip(contexts, queries,
                                                                      strict=True)]
    return Pairs(contexts, continuations, groups, [q.input for q in queries], prompts,
                 f"flan_data mirror {data_dir}")


def synthetic_pairs(tok, n_queries: int, n_candidates: int, seed: int) -> Pairs:
    """Word salad shaped like the mirror's pairs (about 1 token a word): prompts of 15-120
    words, queries of 10-90, two one-word options (every third query: three of 2-6 words); a
    pool of `n_queries` prompts, so each prompt serves about `n_candidates` queries."""
    vocab = sorted(tok.get_vocab())
    words = [t[1:] for t in vocab if t.startswith("Ġ") and t[1:].isalpha()]
    words = words or [t for t in vocab if t.isalpha()]
    rng = random.Random(seed)
    text = lambda lo, hi: " ".join(rng.choices(words, k=rng.randint(lo, hi)))  # noqa: E731
    pool = [text(15, 120) for _ in range(max(n_queries, n_candidates))]
    rows = []
    for i in range(n_queries):
        query = text(10, 90)
        options = [text(2, 6) for _ in range(3)] if i % 3 == 0 else [text(1, 1), text(1, 1)]
        rows += [(query, p, options) for p in rng.sample(range(len(pool)), n_candidates)]
    return Pairs([join_context([pool[p]], q) for q, p, _ in rows], [o for _, _, o in rows],
                 [f"p{p}" for _, p, _ in rows], [q for q, _, _ in rows],
                 [pool[p] for _, p, _ in rows], "synthetic")
