"""The data stage's files: one folder with the pool, queries, candidates and a manifest.

    DIR/pool.jsonl            Prompt records (the retrieval pool)
    DIR/train_queries.jsonl   Query records the retriever learns from
    DIR/eval_queries.jsonl    Query records of the held-out cluster
    DIR/candidates.jsonl      Candidates records (prompt ids to score per training query)
    DIR/data_manifest.json    the protocol settings, counts and carves
"""

from __future__ import annotations

import json
from pathlib import Path

from flan_data.protocol import StageData
from flan_data.schema import Candidates, Prompt, Query, read_jsonl, write_json, write_jsonl

POOL, TRAIN_QUERIES, EVAL_QUERIES = "pool.jsonl", "train_queries.jsonl", "eval_queries.jsonl"
CANDIDATES, MANIFEST = "candidates.jsonl", "data_manifest.json"


def write_stage_data(stage: StageData, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    write_jsonl(out / POOL, stage.pool)
    write_jsonl(out / TRAIN_QUERIES, stage.train_queries)
    write_jsonl(out / EVAL_QUERIES, stage.eval_queries)
    write_jsonl(out / CANDIDATES, stage.candidates)
    write_json(out / MANIFEST, stage.manifest)  # last: its presence marks a complete stage
    return out


def read_stage_data(data_dir: str | Path) -> StageData:
    d = Path(data_dir)
    if not (d / MANIFEST).is_file():
        raise FileNotFoundError(
            f"{d / MANIFEST} not found: {d} is not a complete data-stage folder. "
            "Run `uprise data --output-dir DIR` first."
        )
    return StageData(
        pool=read_jsonl(d / POOL, Prompt),
        train_queries=read_jsonl(d / TRAIN_QUERIES, Query),
        eval_queries=read_jsonl(d / EVAL_QUERIES, Query),
        candidates=read_jsonl(d / CANDIDATES, Candidates),
        manifest=json.loads((d / MANIFEST).read_text()),
    )
