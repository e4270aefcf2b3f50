"""A persistent, content-addressed cache of option losses, shared by every scoring run.

Contract: `ScoreCache.for_lm(lm, root)` opens the cache of one LM; `get(keys)` returns the
cached losses of the keys it holds; `put(entries)` stores new ones durably. Scoring the same
pairs again, in any output folder, by any process, then runs no forward pass.

Keys. An entry is keyed by `pair_key(template, context, continuations)`: a SHA-256 of the
query's template id, the full LM context (`join_context([prompt.text], query.input)`, so the
prompt text, the separator and the query input) and the continuations (answer options, or
the gold reference). Entries live in a namespace per LM identity: a SHA-256 of the model
config, dtype, token window, a sample of every weight tensor (the first 64 values, so new
weights behind the same path get a new namespace), the tokenizer and `ENGINE_VERSION`. The
LM's name is not part of it: the same checkpoint under two paths shares entries.

Layout and atomicity:

    <root>/<namespace>/lm.json                   what the namespace hashes (for humans)
    <root>/<namespace>/seg-<time>-<host>-<pid>-<n>.jsonl
                                                 {"k": key, "l": [losses...]} per line

`root` defaults to `$UPRISE_SCORE_CACHE`, else `$UPRISE_CACHE/scores` (`~/.cache/uprise`).
Every `put` writes one new segment (temp file, fsync, rename) and never touches an existing
file, so concurrent writers (DDP ranks, nodes on a shared filesystem) cannot conflict and a
killed writer leaves no partial segment. Readers scan the segments once, keeping only the
keys they ask for. Delete a namespace folder to drop its entries; nothing is ever evicted.

Damage never blocks a run: a segment line that is not a `{"k": str, "l": [numbers]}` object
(truncated, corrupt, hand-edited) or a segment that cannot be read is skipped with a warning
naming the file and line, counted in `ScoreCache.damaged`, and its pairs are computed again
(the new losses go to a new segment).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flan_data.schema import atomic_write, write_json
from proxy_lm.loading import LanguageModel
from proxy_lm.paths import cache_root

log = logging.getLogger(__name__)

ENGINE_VERSION = 1
"""Bump when the loss definition changes; old entries then stop matching."""
_COUNTER = itertools.count()
_WARNINGS_PER_SEGMENT = 5


def default_root() -> Path:
    env = os.environ.get("UPRISE_SCORE_CACHE")
    return Path(env).expanduser() if env else cache_root() / "scores"


def pair_key(template: int, context: str, continuations: list[str]) -> str:
    payload = json.dumps([template, context, continuations], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def lm_identity(lm: LanguageModel) -> dict[str, Any]:
    """What the namespace of `lm` hashes: config, dtype, window, weight sample, tokenizer."""
    weights = hashlib.sha256()
    for name, param in lm.model.state_dict().items():
        sample = param.detach().flatten()[:64].float().cpu().numpy().tobytes()
        weights.update(name.encode() + sample)
    tok = lm.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
    return {
        "engine_version": ENGINE_VERSION,
        "config": lm.model.config.to_diff_dict(),
        "dtype": str(lm.model.dtype),
        "max_length": lm.max_length,
        "weights_sample_sha256": weights.hexdigest(),
        "tokenizer_sha256": hashlib.sha256(vocab.encode()).hexdigest(),
        "pad_token_id": tok.pad_token_id,
        "example_name": lm.name,
    }


class ScoreCache:
    """One LM's namespace of cached option losses (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._known: dict[str, list[float]] = {}
        self._wanted: set[str] = set()  # segments are read for these keys only
        self._scanned: set[str] = set()
        self.damaged = 0
        """Damaged entries (lines) and unreadable segments skipped so far."""

    @classmethod
    def for_lm(cls, lm: LanguageModel, root: str | Path | None = None) -> ScoreCache:
        identity = lm_identity(lm)
        hashed = {k: v for k, v in identity.items() if k != "example_name"}
        digest = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode())
        folder = Path(root or default_root()) / digest.hexdigest()[:20]
        if not (folder / "lm.json").is_file():
            write_json(folder / "lm.json", identity)
        log.info("score cache: %s", folder)
        return cls(folder)

    def get(self, keys: Iterable[str]) -> dict[str, list[float]]:
        """Cached losses of those `keys` the cache holds. Segments are read once for the keys
        asked so far; asking for new keys rereads them, so ask for a run's keys up front."""
        wanted = set(keys)
        if not wanted <= self._wanted:
            self._wanted |= wanted
            self._scanned.clear()
        if wanted - self._known.keys():
            self._scan()
        return {k: self._known[k] for k in wanted if k in self._known}

    def put(self, entries: dict[str, list[float]]) -> None:
        """Stores `entries` durably as one new segment file."""
        if not entries:
            return
        name = (f"seg-{time.strftime('%Y%m%dT%H%M%S')}-{socket.gethostname()}-{os.getpid()}"
                f"-{next(_COUNTER)}.jsonl")
        lines = (json.dumps({"k": k, "l": v}) + "\n" for k, v in entries.items())
        atomic_write(self.folder / name, lines)
        self._scanned.add(name)
        self._known.update(entries)

    def _scan(self) -> None:
        """Reads the segments not read yet, keeping the entries of the keys wanted."""
        for path in sorted(self.folder.glob("seg-*.jsonl")):
            if path.name in self._scanned:
                continue
            self._scan_segment(path)
            self._scanned.add(path.name)

    def _scan_segment(self, path: Path) -> None:
        damaged = 0
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                for number, line in enumerate(fh, start=1):
                    row = _entry(line)
                    if row is None:
                        damaged += 1
                        if damaged <= _WARNINGS_PER_SEGMENT:
                            log.warning("score cache: skipping damaged entry %s line %d (%r); "
                                        "its pair is computed again", path, number, line[:80])
                    elif row[0] in self._wanted:
                        self._known[row[0]] = row[1]
        except OSError as err:
            damaged += 1
            log.warning("score cache: skipping unreadable segment %s (%s); its pairs are "
                        "computed again", path, err)
        if damaged > _WARNINGS_PER_SEGMENT:
            log.warning("score cache: %s has %d damaged entries in all; delete the file to "
                        "silence this", path, damaged)
        self.damaged += damaged


def _entry(line: str) -> tuple[str, list[float]] | None:
    """(key, losses) of one segment line, or None when the line is damaged."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict) or not isinstance(row.get("k"), str):
        return None
    losses = row.get("l")
    if not isinstance(losses, list) or not losses or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in losses):
        return None
    return row["k"], losses
