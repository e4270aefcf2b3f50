"""The data stage's files: one folder with the pool, queries, candidates and a manifest.

    DIR/pool.jsonl            Prompt records (the retrieval pool)
    DIR/train_queries.jsonl   Query records the retriever learns from
    DIR/eval_queries.jsonl    Query records of the held-out cluster
    DIR/dev_queries.jsonl     Query records withheld for development (in-task `--dev-per-task`;
                              only where the manifest counts `dev_queries`)
    DIR/candidates.jsonl      Candidates records (prompt ids to score per training query)
    DIR/data_manifest.json    the protocol settings, counts and carves

Reading checks each file's record count against the manifest's `counts` (candidates: one record
per training query) and raises `StageCountError` on a mismatch, so a file edited after the stage
wrote it (a dropped query, a truncated copy) is refused. `read_stage_file` does the same for one
file, wherever it is read on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flan_data.protocol import StageData
from flan_data.schema import (
    Candidates,
    Prompt,
    Query,
    Record,
    SchemaError,
    read_jsonl,
    write_json,
    write_jsonl,
)

POOL, TRAIN_QUERIES, EVAL_QUERIES = "pool.jsonl", "train_queries.jsonl", "eval_queries.jsonl"
CANDIDATES, DATA_MANIFEST = "candidates.jsonl", "data_manifest.json"
DEV_QUERIES = "dev_queries.jsonl"
COUNT_KEYS = {POOL: "pool", TRAIN_QUERIES: "train_queries", EVAL_QUERIES: "eval_queries",
              CANDIDATES: "train_queries", DEV_QUERIES: "dev_queries"}
"""The manifest `counts` key each file's record count must equal."""


class StageCountError(ValueError):
    """A stage file holds a different number of records than its data_manifest.json counts."""


def write_stage_data(stage: StageData, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    write_jsonl(out / POOL, stage.pool)
    write_jsonl(out / TRAIN_QUERIES, stage.train_queries)
    write_jsonl(out / EVAL_QUERIES, stage.eval_queries)
    write_jsonl(out / CANDIDATES, stage.candidates)
    if _has_dev_queries(stage.manifest):
        write_jsonl(out / DEV_QUERIES, stage.dev_queries)
    write_json(out / DATA_MANIFEST, stage.manifest)  # last: its presence marks a complete stage
    return out


def read_stage_data(data_dir: str | Path) -> StageData:
    d = Path(data_dir)
    if not (d / DATA_MANIFEST).is_file():
        raise FileNotFoundError(
            f"{d / DATA_MANIFEST} not found: {d} is not a complete data-stage folder. "
            "Run `uprise data --output-dir DIR` first."
        )
    manifest = read_manifest(d)
    return StageData(
        pool=_read_counted(d / POOL, Prompt, manifest),
        train_queries=_read_counted(d / TRAIN_QUERIES, Query, manifest),
        eval_queries=_read_counted(d / EVAL_QUERIES, Query, manifest),
        candidates=_read_counted(d / CANDIDATES, Candidates, manifest),
        manifest=manifest,
        dev_queries=(_read_counted(d / DEV_QUERIES, Query, manifest)
                     if _has_dev_queries(manifest) else []),
    )


def read_stage_file(path: str | Path, cls: type[Record]) -> list[Record]:
    """Reads one record file; inside a stage folder, its count is checked against the manifest."""
    path = Path(path)
    if path.name in COUNT_KEYS and (path.parent / DATA_MANIFEST).is_file():
        return _read_counted(path, cls, read_manifest(path.parent))
    return read_jsonl(path, cls)


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / DATA_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SchemaError(
            f"{path}:{err.lineno}: not valid JSON ({err.msg}); re-run `uprise data` for "
            f"{path.parent} (with --overwrite)."
        ) from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("counts", {}), dict):
        raise SchemaError(
            f"{path}: expected a JSON object with a 'counts' object, got {manifest!r:.80}; "
            f"re-run `uprise data` for {path.parent} (with --overwrite)."
        )
    return manifest


def _has_dev_queries(manifest: dict[str, Any]) -> bool:
    """Whether the folder holds DEV_QUERIES: only where the manifest counts them (in-task data
    built with `--dev-per-task`), so folders without them keep their four files."""
    return COUNT_KEYS[DEV_QUERIES] in manifest.get("counts", {})


def _read_counted(path: Path, cls: type[Record], manifest: dict[str, Any]) -> list[Record]:
    records = read_jsonl(path, cls)
    key = COUNT_KEYS[path.name]
    expected = manifest.get("counts", {}).get(key)  # a hand-made manifest may have no counts
    if expected is not None and len(records) != expected:
        what = "training queries (one candidates record each)" if path.name == CANDIDATES else key
        raise StageCountError(
            f"{path}: holds {len(records)} records but {path.parent / DATA_MANIFEST} counts "
            f"{expected!r} {what}; the file changed after the data stage wrote it. Re-run "
            f"`uprise data --output-dir {path.parent} --overwrite` (or the mining round that "
            "wrote the folder)."
        )
    return records
