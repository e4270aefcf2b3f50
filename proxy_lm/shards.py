"""Scoring into a score folder: pairs in work order, shards, resuming, and the folder's lock.

Contract. Pairs are scored in *work order*: grouped by prompt (prompts in order of first
appearance among the candidates, each prompt's queries in candidate order), so that a
prompt's KV cache serves all its queries within a shard. Shard i holds work-order pairs
[i * shard_size, (i + 1) * shard_size) as `shard-0000i.jsonl`; the manifest
(`score_manifest.json`; the folder's files, their reader and the manifest's reader and writer
are `flan_data.score_folder`'s) is

    {"lm": ..., "n_pairs": ..., "shard_size": ..., "pairs_sha256": ..., "order": "by_prompt",
     "complete": bool, "shards": [{"file": "shard-00000.jsonl", "n": 256, "complete": bool}]}

Shard files are written atomically, so a shard file that exists is complete: `reconcile`
marks those shards complete (a run killed between a shard and the manifest loses nothing),
and any process may write shards while one process (rank 0) owns the manifest. Shard names
depend on the shard index only, so a run can resume on a different number of devices. A
folder whose manifest still has its legacy name (`manifest.json`) is resumed as well; its
manifest is rewritten under the new name. `flan_data.score_folder.read_scores` reads the
finished folder.

`score_folder_lock(out_dir)` holds an exclusive, non-blocking `flock` on `LOCK_FILE` inside the
folder for one scoring run (its global-zero process): a second run on the same folder fails at
once instead of computing everything again. The lock file stays (it is empty); the lock goes
with the process, so a killed run never leaves the folder locked.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flan_data.errors import CommandError
from flan_data.schema import refuse_nonempty_dir
from flan_data.score_folder import (
    LEGACY_MANIFEST,
    LOCK_FILE,
    SCORE_MANIFEST,
    manifest_path,
    read_manifest,
    shard_name,
    write_manifest,
)

log = logging.getLogger(__name__)

ORDER = "by_prompt"


class ScoreFolderLocked(CommandError):
    """Another scoring run holds the score folder's lock."""


@contextmanager
def score_folder_lock(out_dir: str | Path) -> Iterator[Path]:
    """Creates `out_dir` if needed and holds its exclusive lock until the block ends; raises
    `ScoreFolderLocked` at once when another process holds it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise ScoreFolderLocked(
                f"{out_dir}: another `uprise score` run holds this score folder (lock "
                f"{out_dir / LOCK_FILE}); wait for it to finish, or score into another "
                "--output-dir."
            ) from err
        yield out_dir
    finally:
        os.close(fd)  # releases the lock


def work_order(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(query id, prompt id) pairs grouped by prompt, stably (see the module docstring)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for pair in pairs:
        groups.setdefault(pair[1], []).append(pair)
    return [pair for group in groups.values() for pair in group]


def fresh_manifest(lm_name: str, pairs: list[tuple[str, str]], shard_size: int) -> dict:
    digest = hashlib.sha256("".join(f"{q}\t{p}\n" for q, p in pairs).encode()).hexdigest()
    n_shards = math.ceil(len(pairs) / shard_size)
    return {
        "lm": lm_name,
        "n_pairs": len(pairs),
        "shard_size": shard_size,
        "pairs_sha256": digest,
        "order": ORDER,
        "complete": n_shards == 0,
        "shards": [
            {"file": shard_name(i), "n": min(shard_size, len(pairs) - i * shard_size),
             "complete": False}
            for i in range(n_shards)
        ],
    }


def open_manifest(out_dir: Path, lm_name: str, pairs: list[tuple[str, str]],
                  shard_size: int) -> dict:
    """The existing manifest when resuming (checked to match, reconciled, migrated to its
    current name), else a fresh one; a non-empty folder without a manifest is refused."""
    fresh = fresh_manifest(lm_name, pairs, shard_size)
    old = read_manifest(out_dir, required=False)
    if old is not None:
        keys = ("lm", "n_pairs", "shard_size", "pairs_sha256", "order")
        changed = "; ".join(f"{k} was {old.get(k)!r}, now {fresh[k]!r}" for k in keys
                            if old.get(k) != fresh[k])
        if changed:
            raise ValueError(
                f"{manifest_path(out_dir)}: cannot resume a different scoring run ({changed}). "
                "Resume with the same LM, shard size and candidates, or choose another output "
                "directory."
            )
        reconcile(out_dir, old)
        log.info("resuming %s: %d of %d shards complete", out_dir,
                 sum(e["complete"] for e in old["shards"]), len(old["shards"]))
        return old
    refuse_nonempty_dir(out_dir, "", f"it has no {SCORE_MANIFEST}, so it is not a score folder "
                        "to resume; choose an empty output directory.", ignore=(LOCK_FILE,))
    write_manifest(out_dir, fresh)
    return fresh


def reconcile(out_dir: Path, manifest: dict) -> dict:
    """Marks complete exactly the shards whose file exists; rewrites the manifest if changed
    (or if it is missing or still under its legacy name)."""
    before = json.dumps(manifest, sort_keys=True)
    for entry in manifest["shards"]:
        entry["complete"] = (out_dir / entry["file"]).is_file()
    manifest["complete"] = all(e["complete"] for e in manifest["shards"])
    stale_name = (out_dir / LEGACY_MANIFEST).exists() or not (out_dir / SCORE_MANIFEST).is_file()
    if json.dumps(manifest, sort_keys=True) != before or stale_name:
        write_manifest(out_dir, manifest)
    return manifest


def shard_pairs(pairs: list[tuple[str, str]], manifest: dict, index: int) -> list[tuple[str, str]]:
    size = manifest["shard_size"]
    return pairs[index * size : (index + 1) * size]
