"""The score folder: pairs in work order, shard files and the manifest that says what is done.

Contract. Pairs are scored in *work order*: grouped by prompt (prompts in order of first
appearance among the candidates, each prompt's queries in candidate order), so that a
prompt's KV cache serves all its queries within a shard. Shard i holds work-order pairs
[i * shard_size, (i + 1) * shard_size) as `shard-0000i.jsonl`; `manifest.json` is

    {"lm": ..., "n_pairs": ..., "shard_size": ..., "pairs_sha256": ..., "order": "by_prompt",
     "complete": bool, "shards": [{"file": "shard-00000.jsonl", "n": 256, "complete": bool}]}

Shard files are written atomically, so a shard file that exists is complete: `reconcile`
marks those shards complete (a run killed between a shard and the manifest loses nothing),
and any process may write shards while one process (rank 0) owns the manifest. Shard names
depend on the shard index only, so a run can resume on a different number of devices.
`read_scores` returns the scores in shard (work) order after checking every shard.

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
from flan_data.schema import Score, read_jsonl, write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ORDER = "by_prompt"
LOCK_FILE = ".uprise-score.lock"


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
            {"file": f"shard-{i:05d}.jsonl", "n": min(shard_size, len(pairs) - i * shard_size),
             "complete": False}
            for i in range(n_shards)
        ],
    }


def open_manifest(out_dir: Path, lm_name: str, pairs: list[tuple[str, str]],
                  shard_size: int) -> dict:
    """The existing manifest when resuming (checked to match, reconciled), else a fresh one."""
    fresh = fresh_manifest(lm_name, pairs, shard_size)
    path = out_dir / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        keys = ("lm", "n_pairs", "shard_size", "pairs_sha256", "order")
        changed = "; ".join(f"{k} was {old.get(k)!r}, now {fresh[k]!r}" for k in keys
                            if old.get(k) != fresh[k])
        if changed:
            raise ValueError(
                f"{path}: cannot resume a different scoring run ({changed}). Resume with the same "
                "LM, shard size and candidates, or choose another output directory."
            )
        reconcile(out_dir, old)
        log.info("resuming %s: %d of %d shards complete", out_dir,
                 sum(e["complete"] for e in old["shards"]), len(old["shards"]))
        return old
    if out_dir.is_dir() and any(p.name != LOCK_FILE for p in out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} is not empty and has no {MANIFEST}; choose an empty output directory."
        )
    write_json(path, fresh)
    return fresh


def reconcile(out_dir: Path, manifest: dict) -> dict:
    """Marks complete exactly the shards whose file exists; rewrites the manifest if changed."""
    before = json.dumps(manifest, sort_keys=True)
    for entry in manifest["shards"]:
        entry["complete"] = (out_dir / entry["file"]).is_file()
    manifest["complete"] = all(e["complete"] for e in manifest["shards"])
    if json.dumps(manifest, sort_keys=True) != before or not (out_dir / MANIFEST).is_file():
        write_json(out_dir / MANIFEST, manifest)
    return manifest


def shard_pairs(pairs: list[tuple[str, str]], manifest: dict, index: int) -> list[tuple[str, str]]:
    size = manifest["shard_size"]
    return pairs[index * size : (index + 1) * size]


def read_scores(out_dir: str | Path) -> list[Score]:
    """All scores of a finished score folder, in shard (work) order; checks every shard."""
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
    scores = []
    for entry in manifest["shards"]:
        rows = read_jsonl(out_dir / entry["file"], Score)
        if len(rows) != entry["n"]:
            raise ValueError(
                f"{out_dir / entry['file']} holds {len(rows)} scores but the manifest expects "
                f"{entry['n']}; delete that shard file and rerun `uprise score` to redo it."
            )
        scores += rows
    if len(scores) != manifest["n_pairs"]:
        raise ValueError(f"{path}: {len(scores)} scores for {manifest['n_pairs']} pairs; "
                         "delete the folder and score again.")
    return scores
