"""`PromptRetriever`: an exported retriever plus its FAISS index, ready to serve.

Contract: `PromptRetriever.from_pretrained(dir)` reads a directory written by
`retriever.export_retriever` and then `retriever.index_pool` (the two-tower
SentenceTransformer, `uprise_config.json`, `index.faiss`, `prompts.jsonl`, optional
`prompt_embeddings.safetensors`, `manifest.json`) and refuses one whose manifest disagrees with
the files (`serve.checks`: a file changed, missing or not listed in the manifest's sha256 table
of every file, counts, dimensions, index class), with an error naming the path and both values.

`retrieve(query, k, filters=None, diversity=0.0)` embeds the query with the query tower and
returns k pool prompts, best first (`rank` 1 = best, `score` = inner product with the query):
the k highest-scoring ones, restricted to prompts passing `filters` (a `PromptFilter` or a dict
such as `{"cluster": ["nli"], "exclude_task": ["rte"]}`; k are returned whenever k prompts
pass), and with `diversity` > 0 reranked by maximal marginal relevance over a deeper candidate
set, using the exact prompt embeddings (saved, or reconstructed from the index). `augment`
builds the UPRISE LM input from them (`serve.context.build_context`: best prompt nearest the
input, lowest-ranked dropped first to fit `max_tokens` counted with the target LM's
`tokenizer`). `retrieve_batch` / `augment_batch` do the same for a list of queries with one
encoder call. Everything is deterministic: the same directory and inputs give the same output.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flan_data.schema import Prompt
from retriever import INDEX_MANIFEST
from serve.checks import RetrieverDirError, check_checksums, check_directory, read_manifest
from serve.context import build_context, count_tokens
from serve.features import query_features
from serve.filters import PoolFilterer, PromptFilter
from serve.mmr import mmr_order

__all__ = ["MANIFEST_FILE", "PromptRetriever", "RetrievedPrompt", "RetrieverDirError",
           "build_context", "count_tokens"]

log = logging.getLogger(__name__)

MANIFEST_FILE = INDEX_MANIFEST
"""The index manifest's file name (`retriever.INDEX_MANIFEST`), public here under this name."""

MMR_DEPTH = 5
"""With diversity > 0, MMR reranks the top max(MMR_DEPTH * k, 20) prompts."""


@dataclass(frozen=True)
class RetrievedPrompt:
    """One pool prompt returned for a query; `rank` 1 is the best, `score` the inner product."""

    id: str
    text: str
    task: str
    cluster: str
    score: float
    rank: int


class PromptRetriever:
    """Top-k pool prompts for a task input, by inner product of the two towers' embeddings."""

    def __init__(self, encoder: Any, index: Any, prompts: Sequence[Prompt],
                 config: dict[str, Any] | None = None,
                 path: str | os.PathLike[str] | None = None,
                 embeddings: np.ndarray | None = None, gpu: bool | None = None) -> None:
        if index.ntotal != len(prompts):
            raise RetrieverDirError(
                f"{path or 'PromptRetriever'}: index holds {index.ntotal} vectors but "
                f"{len(prompts)} prompts were given; row i of prompts must be FAISS id i."
            )
        self.encoder = encoder
        self.index = index
        self.prompts = list(prompts)
        self.config = dict(config or {})
        self.path = Path(path) if path is not None else None
        self.embeddings = embeddings  # (n_prompts, dim) exact prompt embeddings, or None
        self._gpu = gpu
        self._refresh()

    def _refresh(self) -> None:
        from retriever import to_gpu

        self._filterer = PoolFilterer(self.prompts)
        self._gpu_index = to_gpu(self.index) if self._gpu is not False else None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: str | None = None,
                        verify: bool = True, gpu: bool | None = None) -> PromptRetriever:
        """Loads an exported, indexed retriever directory.

        `verify` (first, before anything is deserialised) hashes every file of the directory once
        and refuses it unless the files are exactly those `manifest.json` lists, each with its
        recorded sha256 (towers, tokenizers, configs, model card, index, prompts).
        `gpu` None searches unfiltered queries on a GPU copy of the index when faiss has one.
        """
        from retriever import load_embeddings, load_index, load_retriever_encoder

        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"retriever directory {folder} does not exist; pass the folder written by "
                "`uprise train` (or `retriever.export_retriever`) and indexed by `uprise index`."
            )
        manifest = read_manifest(folder)
        if verify:
            check_checksums(folder, manifest)
        index, prompts = load_index(folder)
        encoder, config = load_retriever_encoder(folder, device=device)
        check_directory(folder, manifest, index, prompts, config)
        embeddings = load_embeddings(folder) if manifest.get("embeddings_file") else None
        log.info("loaded retriever %s: %d prompts, dim %d, %s", folder, len(prompts), index.d,
                 manifest.get("index_factory"))
        return cls(encoder, index, prompts, config=config, path=folder, embeddings=embeddings,
                   gpu=gpu if device != "cpu" else False)

    @property
    def tasks(self) -> list[str]:
        """The pool's task names, sorted (valid `task` / `exclude_task` filter values)."""
        return list(self._filterer.tasks)

    @property
    def clusters(self) -> list[str]:
        """The pool's cluster names, sorted (valid `cluster` / `exclude_cluster` values)."""
        return list(self._filterer.clusters)

    def check_filters(self, filters: PromptFilter | dict | None) -> PromptFilter | None:
        """`filters` as a `PromptFilter` (None for none), checked against this pool's tasks and
        clusters: `ValueError` / `TypeError` naming the bad key or value otherwise."""
        flt = PromptFilter.coerce(filters)
        if flt is not None:
            self._filterer.validate(flt)
        return None if flt is None or flt.is_empty else flt

    def retrieve(self, query: str, k: int = 3, filters: PromptFilter | dict | None = None,
                 diversity: float = 0.0) -> list[RetrievedPrompt]:
        """The k best pool prompts for `query`, best first (fewer if fewer pass the filters)."""
        return self.retrieve_batch([query], k, filters=filters, diversity=diversity)[0]

    def retrieve_batch(self, queries: Sequence[str], k: int = 3,
                       filters: PromptFilter | dict | None = None,
                       diversity: float = 0.0) -> list[list[RetrievedPrompt]]:
        """`retrieve` for many queries at once; one list per query, in input order."""
        if isinstance(queries, str):
            raise TypeError("retrieve_batch takes a list of queries; use retrieve() for one.")
        _check_queries(queries)
        _check_k_and_diversity(k, diversity)
        flt = PromptFilter.coerce(filters)
        if flt is not None:
            self._filterer.validate(flt)
        if not queries:
            return []
        return self.search_embeddings(self.encode_queries(queries), k, flt, diversity)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """The query tower's embeddings -> (n_queries, dim) float32."""
        return encode_queries(self.encoder, queries)

    def search_embeddings(self, q_emb: np.ndarray, k: int, filters: PromptFilter | None = None,
                          diversity: float = 0.0) -> list[list[RetrievedPrompt]]:
        """Retrieval from already-encoded queries (n_queries, dim)."""
        from retriever import search

        allowed = None if filters is None or filters.is_empty else self._filterer.mask(filters)
        depth = k if diversity == 0.0 else max(MMR_DEPTH * k, 20)
        if allowed is None and self._gpu_index is not None:
            scores, ids = search(self._gpu_index, q_emb, depth)
        else:
            scores, ids = search(self.index, q_emb, depth, allowed=allowed,
                                 vectors=self.prompt_vectors)  # (n_queries, depth) each
        rows = []
        for s, i in zip(scores, ids, strict=True):
            s, i = s[i >= 0], i[i >= 0]  # faiss pads with -1 when it finds fewer than asked
            order = list(range(min(k, len(i))))
            if diversity > 0.0 and len(i) > 1:
                order = mmr_order(s, self.prompt_vectors(i), k, diversity)
            rows.append(self._hits(s[order], i[order]))
        return rows

    def prompt_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Exact prompt embeddings of FAISS `ids` -> (len(ids), dim)."""
        from retriever import reconstruct

        ids = np.asarray(ids, dtype=np.int64)
        if self.embeddings is not None:
            return np.asarray(self.embeddings[ids], dtype=np.float32)
        return reconstruct(self.index, ids)

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[RetrievedPrompt]:
        hits = []
        for score, idx in zip(scores, ids, strict=True):
            p = self.prompts[int(idx)]
            hits.append(RetrievedPrompt(id=p.id, text=p.text, task=p.task, cluster=p.cluster,
                                        score=float(score), rank=len(hits) + 1))
        return hits

    def augment(self, query: str, k: int = 3, max_tokens: int | None = None,
                tokenizer: Any | None = None, filters: PromptFilter | dict | None = None,
                diversity: float = 0.0) -> str:
        """`query` preceded by its top-k prompts (best last), within `max_tokens` if given."""
        return self.augment_batch([query], k, max_tokens, tokenizer, filters, diversity)[0]

    def augment_batch(self, queries: Sequence[str], k: int = 3, max_tokens: int | None = None,
                      tokenizer: Any | None = None, filters: PromptFilter | dict | None = None,
                      diversity: float = 0.0) -> list[str]:
        """`augment` for many queries at once, in input order."""
        rows = self.retrieve_batch(queries, k, filters=filters, diversity=diversity)
        return [build_context(q, hits, max_tokens, tokenizer)
                for q, hits in zip(queries, rows, strict=True)]

    def add_prompts(self, prompts: Sequence[Prompt], batch_size: int = 64) -> None:
        """Adds prompts to this in-memory retriever (ids n..n+m-1); the directory is not changed.

        To grow the directory on disk, use `retriever.index_dir.add_prompts`.
        """
        from retriever import encode_prompts

        known = {p.id for p in self.prompts}
        dupes = [p.id for p in prompts if p.id in known]
        if dupes or len({p.id for p in prompts}) != len(prompts):
            raise ValueError(f"prompt id(s) {dupes[:5] or 'repeated'} already in the pool; each "
                             "prompt needs a unique id.")
        p_emb = encode_prompts(self.encoder, prompts, batch_size)  # (n_new, dim)
        self.index.add(p_emb)
        if self.embeddings is not None:
            self.embeddings = np.concatenate([self.embeddings, p_emb])  # (n_prompts, dim)
        self.prompts.extend(prompts)
        self._refresh()


def encode_queries(encoder: Any, queries: Sequence[str], batch_size: int = 64,
                   lean: bool = True) -> np.ndarray:
    """`encoder.encode_query(queries)` as contiguous (n_queries, dim) float32.

    Up to one batch of queries runs the SentenceTransformer's modules directly (`preprocess`,
    then the query route's forward), without `encode`'s per-call set-up (device resolution and
    an `eval()` walk over every submodule, 3-7 ms per call), and with `lean` through
    `serve.lean_bert` where the query tower is a BERT it reproduces (the same vectors, without
    `BertModel.forward`'s Python overhead, another 2-5 ms). `bench/retrieval.py` times each
    route against `encode_query`. Longer lists go through `encode_query`, which sorts them by
    length and batches them.
    """
    queries = list(queries)
    if len(queries) > batch_size:
        q_emb = encoder.encode_query(queries, batch_size=batch_size, convert_to_numpy=True,
                                     show_progress_bar=False)  # (n_queries, dim)
        return np.ascontiguousarray(q_emb, dtype=np.float32)
    import torch

    from serve.lean_bert import lean_query_encoder

    if encoder.training:
        encoder.eval()
    fast = lean_query_encoder(encoder) if lean else None
    features = query_features(encoder, queries)
    with torch.inference_mode():
        out = fast(features) if fast is not None else encoder(features, task="query")
    q_emb = out["sentence_embedding"].float().cpu().numpy()  # (n_queries, dim)
    return np.ascontiguousarray(q_emb, dtype=np.float32)


def _check_queries(queries: Sequence[Any]) -> None:
    """Refuses a query that is not a string, or is empty or whitespace only, by its position."""
    for i, query in enumerate(queries):
        if not isinstance(query, str):
            raise ValueError(f"query {i} is a {type(query).__name__} ({str(query)[:40]!r}); "
                             "expected the task input as a string.")
        if not query.strip():
            raise ValueError(f"query {i} is {query!r}, empty or whitespace only; expected a task "
                             "input. Drop it or fill it in.")


def _check_k_and_diversity(k: Any, diversity: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k={k!r}; expected a positive integer number of prompts.")
    if isinstance(diversity, bool) or not isinstance(diversity, int | float) \
            or not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity={diversity!r}; expected a number in [0, 1] "
                         "(0 = plain top-k, e.g. 0.3 for more varied prompts).")
