"""The score folder written by `uprise score`: shard files of Score records and a manifest.

    DIR/shard-00000.jsonl ...   Score records, `shard_size` pairs per shard, in work order
    DIR/score_manifest.json     {"lm", "n_pairs", "shard_size", "pairs_sha256", "order",
                                 "complete": bool, "shards": [{"file", "n", "complete"}, ...]}
    DIR/zero_shot.jsonl         one Score per scored query with no demonstration (prompt_id
                                `ZERO_SHOT_ID`), written after the shards (`read_zero_shot`)
    DIR/.uprise-score.lock      empty; a scoring run holds its `flock` (`proxy_lm.shards`)

This module is the folder's one reader and manifest writer; how pairs become shards (work
order, sharding, resuming, the lock) is `proxy_lm.shards`'s. The manifest was once called
`manifest.json` (`LEGACY_MANIFEST`): a folder holding only that name is still read, and
`write_manifest` (run by every resumed `uprise score`) writes `SCORE_MANIFEST` and removes the
legacy file, so the folder is migrated the first time it is resumed.

`read_scores(path)` takes a JSONL file of Score records or a score folder. A folder is refused
unless scoring finished: a manifest or shard entry marked incomplete, a shard holding another
number of scores than its entry's `n`, or a total other than `n_pairs` raises `ValueError`
saying how to fix it. Hand-made manifests are accepted too: shard entries may be file names
or objects naming their file under `file`, `path`, `name` or `shard`, and a manifest without a
`shards` list means every `shard-*.jsonl` file of the folder, in name order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flan_data.schema import SchemaError, Score, read_jsonl, write_json

SCORE_MANIFEST, LEGACY_MANIFEST = "score_manifest.json", "manifest.json"
ZERO_SHOT_FILE, ZERO_SHOT_ID = "zero_shot.jsonl", ""
"""The zero-shot scores' file in a score folder, and their prompt id (no demonstration)."""
SHARD_GLOB, LOCK_FILE = "shard-*.jsonl", ".uprise-score.lock"
_ENTRY_KEYS = ("file", "path", "name", "shard")
"""Keys a manifest's shard entry may name its file under (the first string one wins)."""


def shard_name(index: int) -> str:
    """The file name of shard `index` (it depends on the index only)."""
    return f"shard-{index:05d}.jsonl"


def manifest_path(folder: str | Path) -> Path:
    """The manifest file of `folder`: `SCORE_MANIFEST`, or `LEGACY_MANIFEST` when only that
    exists (the `SCORE_MANIFEST` path when neither does)."""
    folder = Path(folder)
    legacy = folder / LEGACY_MANIFEST
    if not (folder / SCORE_MANIFEST).is_file() and legacy.is_file():
        return legacy
    return folder / SCORE_MANIFEST


def read_manifest(folder: str | Path, required: bool = True) -> dict[str, Any] | None:
    """The manifest of score folder `folder` (either name); None when it has none and not
    `required`. Raises FileNotFoundError (none, `required`) or SchemaError (not a JSON object)."""
    folder = Path(folder)
    path = manifest_path(folder)
    if not path.is_file():
        if not required:
            return None
        raise FileNotFoundError(
            f"{path} not found (nor a legacy {LEGACY_MANIFEST}): {folder} is not a complete score "
            "folder. Run (or resume) `uprise score` until it writes the manifest."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SchemaError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); delete {folder} and "
                          "run `uprise score` again.") from err
    if not isinstance(manifest, dict):
        raise SchemaError(f"{path}: expected a JSON object (a score manifest), got "
                          f"{manifest!r:.80}; delete {folder} and run `uprise score` again.")
    return manifest


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Writes `manifest` atomically as `folder/SCORE_MANIFEST`, then removes a legacy one."""
    path = write_json(Path(folder) / SCORE_MANIFEST, manifest)
    (Path(folder) / LEGACY_MANIFEST).unlink(missing_ok=True)
    return path


def is_complete(folder: str | Path) -> bool:
    """Whether `folder` holds a score manifest that marks scoring complete."""
    manifest = read_manifest(folder, required=False)
    return manifest is not None and bool(manifest.get("complete"))


def read_zero_shot(folder: str | Path, query_ids: Iterable[str] = ()) -> dict[str, Score]:
    """The zero-shot Score of each query in `folder/ZERO_SHOT_FILE`, by query id.

    Raises FileNotFoundError when the file is missing (score folders written before it existed:
    resuming `uprise score` on the folder adds it), SchemaError for a record that is not a
    zero-shot score or repeats a query, and KeyError when one of `query_ids` has none."""
    folder = Path(folder)
    path = folder / ZERO_SHOT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the zero-shot scores are missing. Run `uprise score` again with "
            f"the same --data and --output-dir {folder} (it keeps the complete shards and scores "
            "only the queries with no demonstration).")
    out: dict[str, Score] = {}
    for line, s in enumerate(read_jsonl(path, Score), start=1):
        if s.prompt_id != ZERO_SHOT_ID or s.query_id in out:
            why = "repeats its query" if s.query_id in out else f"has prompt_id {s.prompt_id!r}"
            raise SchemaError(f"{path}:{line}: the score of query {s.query_id!r} {why}; a "
                              f"zero-shot file holds one score per query with prompt_id "
                              f"{ZERO_SHOT_ID!r}. Delete the file and rerun `uprise score`.")
        out[s.query_id] = s
    missing = sorted(set(query_ids) - out.keys())
    if missing:
        raise KeyError(f"{path}: no zero-shot score for query {missing[0]!r} (and "
                       f"{len(missing) - 1} more); delete the file and rerun `uprise score` on "
                       f"{folder} with the same --data.")
    return out


def read_scores(path: str | Path) -> list[Score]:
    """The Score records of a JSONL file, or of a finished score folder in shard (work) order
    after checking every shard against the manifest (see the module docstring)."""
    path = Path(path)
    if path.is_file():
        return read_jsonl(path, Score)
    if not path.is_dir():
        raise FileNotFoundError(
            f"scores path {path} does not exist; expected a JSONL file of Score records or a "
            f"score folder (shards and {SCORE_MANIFEST}). Run `uprise score` first."
        )
    manifest = read_manifest(path)
    where = manifest_path(path)
    entries = _shard_entries(path, manifest)
    missing = [name for name, _, complete in entries if not complete]
    if missing or not manifest.get("complete", True):
        raise ValueError(
            f"{where}: scoring is incomplete ({len(missing)} of {len(entries)} shards missing, "
            f"first {missing[:1]}); rerun the same `uprise score` command to resume."
        )
    if not entries and manifest.get("n_pairs") != 0:
        raise SchemaError(f"{path}: no score shards found (the manifest lists none and no "
                          f"{SHARD_GLOB} file is there); run `uprise score` again.")
    scores: list[Score] = []
    for name, n, _ in entries:
        rows = read_jsonl(path / name, Score)
        if n is not None and len(rows) != n:
            raise ValueError(
                f"{path / name} holds {len(rows)} scores but the manifest expects {n}; delete "
                "that shard file and rerun `uprise score` to redo it."
            )
        scores += rows
    n_pairs = manifest.get("n_pairs")
    if n_pairs is not None and len(scores) != n_pairs:
        raise ValueError(f"{where}: {len(scores)} scores for {n_pairs} pairs; delete the folder "
                         "and score again.")
    return scores


def _shard_entries(folder: Path, manifest: dict[str, Any]) -> list[tuple[str, int | None, bool]]:
    """(file name, expected count or None, complete) of each shard the manifest lists, or of
    every `SHARD_GLOB` file when it has no `shards` list."""
    listed = manifest.get("shards")
    if not isinstance(listed, list):
        return [(p.name, None, True) for p in sorted(folder.glob(SHARD_GLOB))]
    return [(e, None, True) if isinstance(e, str)
            else (_entry_name(e, manifest_path(folder)), e.get("n"), bool(e.get("complete", True)))
            for e in listed]


def _entry_name(entry: Any, where: Path) -> str:
    for key in _ENTRY_KEYS:
        if isinstance(entry, dict) and isinstance(entry.get(key), str):
            return Path(entry[key]).name
    raise SchemaError(f"{where}: unrecognised shard entry {entry!r:.120}; expected a file name or "
                      f"an object naming its file under one of {list(_ENTRY_KEYS)}.")
