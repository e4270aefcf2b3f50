"""Scoring (prompt, query) candidate pairs with the proxy LM, in resumable shards, with a cache.

Contract: `score_candidates` turns every (query, candidate prompt) pair into a `Score` whose
context is `join_context([prompt.text], query.input)` and whose continuations are
`query.continuations()`, and returns them in candidate order. On disk the scores go to shards
in work order (pairs grouped by prompt) plus `score_manifest.json`, described in
`proxy_lm.shards`; a rerun skips complete shards and refuses to resume with another LM, shard
size or pair list. The folder's reader, `read_scores`, is `flan_data.score_folder`'s (re-exported
here).

Speed: each shard is scored by the grouped prefix-shared engine (`proxy_lm.shared_prefix`):
the prompt's tokens run once per shard for all its queries. Losses already in the persistent
score cache (`proxy_lm.score_cache`, on by default) are not recomputed, so scoring the same
pairs again, in any folder, costs no forward pass. `ShardScorer` is the unit both this loop
and the multi-device Lightning path (`proxy_lm.distributed`) run.

After the shards, `score_zero_shot` scores each query once with no demonstration (context: the
input alone) into `zero_shot.jsonl` of the same folder: what labels relative to zero-shot need
(`retriever.labels`). It costs one forward pass per query (1/L of the candidate pairs), through
the same score cache, and is skipped when the file already covers every query.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from flan_data.schema import Candidates, Prompt, Query, Score, join_context, write_jsonl
from flan_data.score_folder import ZERO_SHOT_FILE, ZERO_SHOT_ID, read_scores, read_zero_shot
from proxy_lm.likelihood import continuation_losses
from proxy_lm.loading import LanguageModel
from proxy_lm.score_cache import ScoreCache, pair_key
from proxy_lm.shards import open_manifest, reconcile, shard_pairs, work_order

log = logging.getLogger(__name__)

__all__ = ["ShardScorer", "continuation_losses", "read_scores", "score_candidates",
           "score_record", "score_zero_shot"]


def score_record(query: Query, prompt_id: str, lm_name: str, losses: list[float]) -> Score:
    """Choice: score = softmax(-losses)[gold], correct = argmin == gold; generation:
    score = -losses[0], correct = None (see `Score`)."""
    expected = len(query.continuations())
    if len(losses) != expected:
        raise ValueError(
            f"query {query.id!r} has {expected} continuation(s) but got {len(losses)} losses."
        )
    if not query.is_choice:
        return Score(query.id, prompt_id, lm_name, query.template, list(losses), -losses[0], None)
    assert query.gold is not None, query.id
    low = min(losses)
    weights = [math.exp(low - x) for x in losses]  # stable softmax(-losses)
    best = min(range(len(losses)), key=losses.__getitem__)
    return Score(
        query.id, prompt_id, lm_name, query.template, list(losses),
        weights[query.gold] / sum(weights), best == query.gold,
    )


class ShardScorer:
    """Scores lists of pairs (one shard at a time) through the score cache, if any; a pair
    whose prompt id is `ZERO_SHOT_ID` is the query with no demonstration."""

    def __init__(self, lm: LanguageModel, queries: dict[str, Query], prompts: dict[str, Prompt],
                 cache: ScoreCache | None, batch_size: int = 16) -> None:
        self.lm, self.queries, self.prompts = lm, queries, prompts
        self.cache, self.batch_size = cache, batch_size
        self.computed = self.cached = 0  # pairs, for logs and tests

    def context(self, pair: tuple[str, str]) -> str:
        """The LM context of a pair: the prompt then the query input (prompt id
        `ZERO_SHOT_ID`: the input alone)."""
        query_id, prompt_id = pair
        demos = [] if prompt_id == ZERO_SHOT_ID else [self.prompts[prompt_id].text]
        return join_context(demos, self.queries[query_id].input)

    def key(self, pair: tuple[str, str]) -> str:
        query = self.queries[pair[0]]
        return pair_key(query.template, self.context(pair), query.continuations())

    def preload(self, pairs: list[tuple[str, str]]) -> None:
        """Reads the cache once for every pair this process will score."""
        if self.cache is not None:
            self.cache.get(self.key(pair) for pair in pairs)

    def score(self, pairs: list[tuple[str, str]]) -> list[Score]:
        keys = [self.key(pair) for pair in pairs]
        known = self.cache.get(keys) if self.cache is not None else {}
        todo = [k for k, key in enumerate(keys) if key not in known]
        contexts = [self.context(pairs[k]) for k in todo]
        conts = [self.queries[pairs[k][0]].continuations() for k in todo]
        losses = continuation_losses(self.lm, contexts, conts, batch_size=self.batch_size,
                                     groups=[pairs[k][1] for k in todo])
        new = {keys[k]: row for k, row in zip(todo, losses, strict=True)}
        if self.cache is not None:
            self.cache.put(new)
        self.computed += len(todo)
        self.cached += len(pairs) - len(todo)
        return [score_record(self.queries[q], p, self.lm.name, new.get(key) or known[key])
                for (q, p), key in zip(pairs, keys, strict=True)]


def open_score_cache(lm: LanguageModel, score_cache: str | Path | bool | None) -> ScoreCache | None:
    """`True`: the default cache root; a path: that root; `False`/`None`: no cache."""
    if score_cache is None or score_cache is False:
        return None
    return ScoreCache.for_lm(lm, None if score_cache is True else score_cache)


def score_candidates(
    lm: LanguageModel,
    queries: dict[str, Query],
    prompts: dict[str, Prompt],
    candidates: list[Candidates],
    out_dir: str | Path,
    shard_size: int = 256,
    batch_size: int = 16,
    progress: bool = True,
    score_cache: str | Path | bool | None = True,
) -> list[Score]:
    """Scores every candidate pair into resumable shards under `out_dir`; returns all scores
    in candidate order. `score_cache`: True (default root), a root folder, or False."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}.")
    out_dir = Path(out_dir)
    pairs = candidate_pairs(queries, prompts, candidates)
    manifest = open_manifest(out_dir, lm.name, pairs, shard_size)
    work = work_order(pairs)
    scorer = ShardScorer(lm, queries, prompts, open_score_cache(lm, score_cache), batch_size)
    pending = [i for i, e in enumerate(manifest["shards"]) if not e["complete"]]
    scorer.preload([p for i in pending for p in shard_pairs(work, manifest, i)])
    bar = _bar(len(pairs), progress)
    bar.update(len(pairs) - sum(manifest["shards"][i]["n"] for i in pending))
    for index in pending:
        chunk = shard_pairs(work, manifest, index)
        write_jsonl(out_dir / manifest["shards"][index]["file"], scorer.score(chunk))
        reconcile(out_dir, manifest)
        bar.update(len(chunk))
    bar.close()
    log.info("scored %d pairs with %s -> %s (%d computed, %d from the score cache, %d shards "
             "were complete)", len(pairs), lm.name, out_dir, scorer.computed, scorer.cached,
             len(manifest["shards"]) - len(pending))
    score_zero_shot(lm, {c.query_id: queries[c.query_id] for c in candidates}, out_dir,
                    batch_size, score_cache)
    by_pair = {(s.query_id, s.prompt_id): s for s in read_scores(out_dir)}
    return [by_pair[pair] for pair in pairs]


def score_zero_shot(
    lm: LanguageModel,
    queries: dict[str, Query],
    out_dir: str | Path,
    batch_size: int = 16,
    score_cache: str | Path | bool | None = True,
) -> list[Score]:
    """Scores every query with no demonstration into `out_dir/zero_shot.jsonl` (atomic; kept
    when it already holds exactly these queries, scored by this LM); returns the scores in
    `queries` order."""
    path = Path(out_dir) / ZERO_SHOT_FILE
    if path.is_file():
        try:
            known = read_zero_shot(out_dir, queries)
        except (KeyError, ValueError) as err:  # other queries, or damaged: score again
            log.warning("%s; scoring the zero-shot pairs again", err)
        else:
            if known.keys() == queries.keys() and {z.lm for z in known.values()} == {lm.name}:
                return [known[q] for q in queries]
    scorer = ShardScorer(lm, queries, {}, open_score_cache(lm, score_cache), batch_size)
    scores = scorer.score([(q, ZERO_SHOT_ID) for q in queries])
    write_jsonl(path, scores)
    log.info("zero-shot: scored %d queries -> %s (%d computed, %d from the score cache)",
             len(scores), path, scorer.computed, scorer.cached)
    return scores


def candidate_pairs(
    queries: dict[str, Query], prompts: dict[str, Prompt], candidates: list[Candidates]
) -> list[tuple[str, str]]:
    pairs = []
    for cand in candidates:
        if cand.query_id not in queries:
            raise KeyError(
                f"candidates name query {cand.query_id!r}, which is not among the "
                f"{len(queries)} queries given; pass the query set the candidates were sampled for."
            )
        for pid in cand.prompt_ids:
            if pid not in prompts:
                raise KeyError(
                    f"candidates of query {cand.query_id!r} name prompt {pid!r}, which is not "
                    "in the pool given; pass the pool the candidates were sampled from."
                )
            pairs.append((cand.query_id, pid))
    return pairs


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="scoring pairs", unit="pair", disable=not enabled)
