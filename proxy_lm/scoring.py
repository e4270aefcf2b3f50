"""Scoring (prompt, query) candidate pairs with the proxy LM, in resumable shards.

Contract: `score_candidates` turns every (query, candidate prompt) pair into a `Score` whose
context is `join_context([prompt.text], query.input)` and whose continuations are
`query.continuations()`. Scores go to `out_dir/shard-00000.jsonl`, ... (`shard_size` pairs
each, in candidate order) and `out_dir/manifest.json`:

    {"lm": ..., "n_pairs": ..., "shard_size": ..., "pairs_sha256": ..., "complete": bool,
     "shards": [{"file": "shard-00000.jsonl", "n": 256, "complete": bool}, ...]}

The manifest is written before the first shard and rewritten (atomically) after each one, so a
rerun skips complete shards; it refuses to resume with another LM, shard size or pair list.
`read_scores` reads a finished folder back in order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

from flan_data.schema import (
    Candidates,
    Prompt,
    Query,
    Score,
    join_context,
    read_jsonl,
    write_json,
    write_jsonl,
)
from proxy_lm.likelihood import continuation_losses
from proxy_lm.loading import LanguageModel

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
__all__ = ["continuation_losses", "read_scores", "score_candidates", "score_record"]


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


def score_candidates(
    lm: LanguageModel,
    queries: dict[str, Query],
    prompts: dict[str, Prompt],
    candidates: list[Candidates],
    out_dir: str | Path,
    shard_size: int = 256,
    batch_size: int = 16,
    progress: bool = True,
) -> list[Score]:
    """Scores every candidate pair into resumable shards under `out_dir`; returns all scores."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}.")
    out_dir = Path(out_dir)
    pairs = _pairs(queries, prompts, candidates)
    manifest = _open_manifest(out_dir, lm.name, pairs, shard_size)
    bar = _bar(len(pairs), progress)
    for index, entry in enumerate(manifest["shards"]):
        chunk = pairs[index * shard_size : (index + 1) * shard_size]
        if entry["complete"] and (out_dir / entry["file"]).is_file():
            bar.update(len(chunk))
            continue
        contexts = [join_context([prompts[p].text], queries[q].input) for q, p in chunk]
        conts = [queries[q].continuations() for q, _ in chunk]
        losses = continuation_losses(lm, contexts, conts, batch_size=batch_size)
        scores = [
            score_record(queries[q], p, lm.name, row)
            for (q, p), row in zip(chunk, losses, strict=True)
        ]
        write_jsonl(out_dir / entry["file"], scores)
        entry["complete"] = True
        manifest["complete"] = all(e["complete"] for e in manifest["shards"])
        write_json(out_dir / MANIFEST, manifest)
        bar.update(len(chunk))
    bar.close()
    log.info("scored %d pairs with %s -> %s", len(pairs), lm.name, out_dir)
    return read_scores(out_dir)


def read_scores(out_dir: str | Path) -> list[Score]:
    """All scores of a finished score folder, in pair order."""
    out_dir = Path(out_dir)
    path = out_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {out_dir} is not a score folder. Run `uprise score` first."
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    missing = [e["file"] for e in manifest["shards"] if not e["complete"]]
    if missing or not manifest.get("complete", False):
        raise ValueError(
            f"{path}: scoring is incomplete ({len(missing)} of {len(manifest['shards'])} shards "
            f"missing, first {missing[:1]}); rerun the same `uprise score` command to resume."
        )
    return [s for e in manifest["shards"] for s in read_jsonl(out_dir / e["file"], Score)]


def _pairs(
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


def _open_manifest(
    out_dir: Path, lm_name: str, pairs: list[tuple[str, str]], shard_size: int
) -> dict:
    """The existing manifest when resuming (after checking it matches), else a fresh one."""
    digest = hashlib.sha256("".join(f"{q}\t{p}\n" for q, p in pairs).encode()).hexdigest()
    n_shards = math.ceil(len(pairs) / shard_size)
    fresh = {
        "lm": lm_name,
        "n_pairs": len(pairs),
        "shard_size": shard_size,
        "pairs_sha256": digest,
        "complete": n_shards == 0,
        "shards": [
            {"file": f"shard-{i:05d}.jsonl", "n": min(shard_size, len(pairs) - i * shard_size),
             "complete": False}
            for i in range(n_shards)
        ],
    }
    path = out_dir / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        keys = ("lm", "n_pairs", "shard_size", "pairs_sha256")
        changed = "; ".join(f"{k} was {old.get(k)!r}, now {fresh[k]!r}" for k in keys
                            if old.get(k) != fresh[k])
        if changed:
            raise ValueError(
                f"{path}: cannot resume a different scoring run ({changed}). Resume with the same "
                "LM, shard size and candidates, or choose another output directory."
            )
        log.info("resuming %s: %d of %d shards complete", out_dir,
                 sum(e["complete"] for e in old["shards"]), n_shards)
        return old
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} is not empty and has no {MANIFEST}; choose an empty output directory."
        )
    write_json(path, fresh)
    return fresh


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="scoring pairs", unit="pair", disable=not enabled)
