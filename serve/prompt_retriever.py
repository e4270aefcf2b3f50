"""`PromptRetriever`: an exported retriever plus its FAISS index, ready to serve.

Contract: `PromptRetriever.from_pretrained(dir)` reads a directory written by
`retriever.export_retriever` and then `retriever.index_pool` (the two-tower
SentenceTransformer, `uprise_config.json`, `index.faiss`, `prompts.jsonl`, `manifest.json`).
It refuses a directory whose manifest disagrees with the files (prompt count, embedding
dimension, sha256 checksums) with an error naming the path and both values.

`retrieve(query, k)` embeds the query with the query tower and returns the k pool prompts with
the highest inner product, best first (`rank` 1 = best). `augment(query, k)` builds the LM
input the way UPRISE does at inference: the retrieved prompts joined with
`flan_data.schema.join_context`, the best prompt placed last (nearest the input), then the
query. With `max_tokens`, the lowest-ranked prompts are dropped first until the whole context
fits; the query itself is never truncated. Tokens are counted with the given Hugging Face
tokenizer (pass the *target* LM's tokenizer) on the whole joined text without special tokens,
or, without a tokenizer, as whitespace-separated words (a rough, tokenizer-free proxy).
Everything here is deterministic: the same directory and query give the same output.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flan_data.schema import Prompt, join_context

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"


class RetrieverDirError(ValueError):
    """A retriever directory is incomplete or its files disagree with each other."""


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

    def __init__(
        self,
        encoder: Any,
        index: Any,
        prompts: Sequence[Prompt],
        config: dict[str, Any] | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
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

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], device: str | None = None, verify: bool = True
    ) -> PromptRetriever:
        """Loads an exported, indexed retriever directory.

        `verify` also compares the sha256 checksums recorded in `manifest.json` with the files.
        """
        from retriever import load_index, load_retriever_encoder

        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"retriever directory {folder} does not exist; pass the folder written by "
                "`uprise train` (or `retriever.export_retriever`) and indexed by `uprise index`."
            )
        manifest = _read_manifest(folder)
        index, prompts = load_index(folder)
        encoder, config = load_retriever_encoder(folder, device=device)
        _check_consistency(folder, manifest, index, prompts, config)
        if verify:
            _check_checksums(folder, manifest)
        log.info("loaded retriever %s: %d prompts, dim %d", folder, len(prompts), index.d)
        return cls(encoder, index, prompts, config=config, path=folder)

    def retrieve(self, query: str, k: int = 3) -> list[RetrievedPrompt]:
        """The k best pool prompts for `query`, best first (fewer if the pool is smaller)."""
        return self.retrieve_batch([query], k)[0]

    def retrieve_batch(self, queries: Sequence[str], k: int = 3) -> list[list[RetrievedPrompt]]:
        """`retrieve` for many queries at once; one list per query, in input order."""
        from retriever import search

        if isinstance(queries, str):
            raise TypeError("retrieve_batch takes a list of queries; use retrieve() for one.")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r}; expected a positive integer number of prompts.")
        if not queries:
            return []
        q_emb = self.encoder.encode_query(
            list(queries), convert_to_numpy=True, show_progress_bar=False
        )  # (n_queries, dim)
        scores, ids = search(self.index, q_emb, k)  # (n_queries, min(k, n_prompts)) each
        return [self._hits(s, i) for s, i in zip(scores, ids, strict=True)]

    def _hits(self, scores: Any, ids: Any) -> list[RetrievedPrompt]:
        hits = []
        for score, idx in zip(scores, ids, strict=True):
            if idx < 0:  # faiss pads with -1 when an approximate index finds fewer than k
                continue
            p = self.prompts[int(idx)]
            hits.append(RetrievedPrompt(id=p.id, text=p.text, task=p.task, cluster=p.cluster,
                                        score=float(score), rank=len(hits) + 1))
        return hits

    def augment(
        self,
        query: str,
        k: int = 3,
        max_tokens: int | None = None,
        tokenizer: Any | None = None,
    ) -> str:
        """`query` preceded by its top-k prompts (best last), within `max_tokens` if given."""
        return build_context(query, self.retrieve(query, k), max_tokens, tokenizer)


def build_context(
    query: str,
    hits: Sequence[RetrievedPrompt],
    max_tokens: int | None = None,
    tokenizer: Any | None = None,
) -> str:
    """Joins `hits` (best first, as `retrieve` returns them) and `query` into the LM input.

    The best prompt goes last, next to the query. Over `max_tokens`, the lowest-ranked prompts
    are dropped one at a time; if the query alone is over budget it is returned alone (never
    truncated) and a warning is logged.
    """
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens={max_tokens!r}; expected a positive integer or None.")
    kept = sorted(hits, key=lambda h: h.rank)
    while True:
        text = join_context([h.text for h in reversed(kept)], query)
        if max_tokens is None or count_tokens(text, tokenizer) <= max_tokens:
            return text
        if not kept:
            log.warning("the query alone has %d tokens, over the budget of %d; returning it "
                        "without prompts", count_tokens(query, tokenizer), max_tokens)
            return query
        kept = kept[:-1]


def count_tokens(text: str, tokenizer: Any | None = None) -> int:
    """Tokens in `text`: the HF tokenizer's ids without special tokens, else whitespace words."""
    if tokenizer is None:
        return len(text.split())
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise RetrieverDirError(
            f"{folder} has no {MANIFEST_FILE}, so its index is missing or incomplete; build it "
            f"with `uprise index --retriever {folder} --pool POOL.jsonl`."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RetrieverDirError(f"{path} is not valid JSON ({err.msg}); rebuild the index with "
                                "`uprise index`.") from err


def _check_consistency(
    folder: Path, manifest: dict[str, Any], index: Any, prompts: list[Prompt],
    config: dict[str, Any],
) -> None:
    checks = [
        ("manifest n_prompts", manifest.get("n_prompts"), "prompts.jsonl rows", len(prompts)),
        ("manifest n_prompts", manifest.get("n_prompts"), "index.faiss vectors", index.ntotal),
        ("manifest embedding_dim", manifest.get("embedding_dim"), "index.faiss dim", index.d),
    ]
    if "embedding_dim" in config:
        checks.append(("uprise_config.json embedding_dim", config["embedding_dim"],
                       "index.faiss dim", index.d))
    for left, left_value, right, right_value in checks:
        if left_value != right_value:
            raise RetrieverDirError(
                f"{folder}: {left} is {left_value} but {right} is {right_value}; the files come "
                "from different runs. Rebuild the index with `uprise index`."
            )


def _check_checksums(folder: Path, manifest: dict[str, Any]) -> None:
    from retriever.index import sha256_file

    for name, expected in sorted(manifest.get("sha256", {}).items()):
        actual = sha256_file(folder / name)
        if actual != expected:
            raise RetrieverDirError(
                f"{folder / name}: sha256 is {actual} but {MANIFEST_FILE} records {expected}; "
                "the file changed after indexing. Rebuild the index with `uprise index`, or "
                "load with verify=False to accept it."
            )
