"""A persistent, content-addressed key -> JSON value store made of append-only segment files.

Contract: `SegmentCache(folder, kind, valid)` holds one namespace; `get(keys)` returns the
cached values of the keys it holds; `put(entries)` stores new ones durably. The score cache
(`proxy_lm.score_cache`, option losses) and the evaluation's prediction cache
(`uprise.evaluation.prediction_cache`, an evaluated LM's answers) are both made of it, each
with its own key, value check and namespace; `namespace(root, identity, hashed)` is the folder
of one identity (a SHA-256 of `hashed`; `identity` is written there as `lm.json`, for humans).

Layout and atomicity:

    <root>/<namespace>/lm.json                   what the namespace hashes
    <root>/<namespace>/seg-<time>-<host>-<pid>-<n>.jsonl
                                                 {"k": key, "l": value} per line

Every `put` writes one new segment (temp file, fsync, rename) and never touches an existing
file, so concurrent writers (DDP ranks, nodes on a shared filesystem) cannot conflict and a
killed writer leaves no partial segment. Readers scan the segments once, keeping only the keys
they ask for. Delete a namespace folder to drop its entries; nothing is ever evicted.

Damage never blocks a run: a segment line that is not a `{"k": str, "l": value}` object with a
value that `valid` accepts (truncated, corrupt, hand-edited), or a segment that cannot be read,
is skipped with a warning naming the file and line, counted in `damaged`, and the caller
computes its entries again (they go to a new segment).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flan_data.schema import atomic_write, write_json

log = logging.getLogger(__name__)
_COUNTER = itertools.count()
_WARNINGS_PER_SEGMENT = 5
IDENTITY_FILE = "lm.json"


def namespace(root: str | Path, identity: dict[str, Any], hashed: dict[str, Any]) -> Path:
    """The folder under `root` of the namespace that `hashed` names (a SHA-256 of its JSON);
    writes `identity` (what `hashed` came from, plus anything worth reading) there once."""
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode())
    folder = Path(root) / digest.hexdigest()[:20]
    if not (folder / IDENTITY_FILE).is_file():
        write_json(folder / IDENTITY_FILE, identity)
    return folder


class SegmentCache:
    """One namespace of cached values (see the module docstring); `kind` names it in warnings
    ("score cache"), `valid(value)` says whether a stored value is intact."""

    def __init__(self, folder: str | Path, kind: str, valid: Callable[[Any], bool]) -> None:
        self.folder, self.kind, self._valid = Path(folder), kind, valid
        self._known: dict[str, Any] = {}
        self._wanted: set[str] = set()  # segments are read for these keys only
        self._scanned: set[str] = set()
        self.damaged = 0
        """Damaged entries (lines) and unreadable segments skipped so far."""

    def get(self, keys: Iterable[str]) -> dict[str, Any]:
        """Cached values of those `keys` the cache holds. Segments are read once for the keys
        asked so far; asking for new keys rereads them, so ask for a run's keys up front."""
        wanted = set(keys)
        if not wanted <= self._wanted:
            self._wanted |= wanted
            self._scanned.clear()
        if wanted - self._known.keys():
            self._scan()
        return {k: self._known[k] for k in wanted if k in self._known}

    def put(self, entries: dict[str, Any]) -> None:
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
                    row = self._entry(line)
                    if row is None:
                        damaged += 1
                        if damaged <= _WARNINGS_PER_SEGMENT:
                            log.warning("%s: skipping damaged entry %s line %d (%r); it is "
                                        "computed again", self.kind, path, number, line[:80])
                    elif row[0] in self._wanted:
                        self._known[row[0]] = row[1]
        except OSError as err:
            damaged += 1
            log.warning("%s: skipping unreadable segment %s (%s); its entries are computed "
                        "again", self.kind, path, err)
        if damaged > _WARNINGS_PER_SEGMENT:
            log.warning("%s: %s has %d damaged entries in all; delete the file to silence this",
                        self.kind, path, damaged)
        self.damaged += damaged

    def _entry(self, line: str) -> tuple[str, Any] | None:
        """(key, value) of one segment line, or None when the line is damaged."""
        try:
            row = json.loads(line)
        except ValueError:
            return None
        if not isinstance(row, dict) or not isinstance(row.get("k"), str):
            return None
        return (row["k"], row["l"]) if "l" in row and self._valid(row["l"]) else None
