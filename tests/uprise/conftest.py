"""Fixtures of the `uprise eval` tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from flan_data.protocol import build_stage_data
from flan_data.schema import Score, write_jsonl
from flan_data.stage_io import POOL, TRAIN_QUERIES, write_stage_data


@pytest.fixture(scope="session")
def train_tiny_retriever(tiny_bert_path):
    """train(root, run="run", **changes): a tiny retriever trained one epoch on
    ROOT/scores.jsonl over the stage folder ROOT/data (a quarter of the scored queries held out
    for validation; `changes`: other `TrainSettings`), exported to ROOT/RUN and indexed over the
    pool; returns the export."""
    from retriever import index_pool, train_retriever

    def train(root: Path, run: str = "run", **changes) -> Path:
        settings = {"encoder": str(tiny_bert_path), "epochs": 1, "batch_size": 4, "lr": 1e-3,
                    "val_fraction": 0.25, "accelerator": "cpu", **changes}
        export = train_retriever(root / "scores.jsonl", root / "data" / TRAIN_QUERIES,
                                 root / "data" / POOL, out_dir=root / run, progress=False,
                                 **settings)
        index_pool(export, root / "data" / POOL)
        return export

    return train


@pytest.fixture(scope="module")
def hand_scored_retriever(tmp_path_factory, shared_data_dir, train_tiny_retriever):
    """A stage folder, hand-valued scores of its candidates (every third query with no
    candidate that makes the LM correct, so no positive), and a tiny retriever trained on them
    (a quarter of the scored queries held out for validation) and indexed."""
    root = tmp_path_factory.mktemp("hand_scored")
    stage = build_stage_data("commonsense", shared_data_dir, ["nli"], pool_per_task=12,
                             queries_per_task=8, n_candidates=4, eval_per_task=3,
                             max_prompt_chars=150)
    write_stage_data(stage, root / "data")
    scores = [Score(c.query_id, pid, "hand", 0, [1.0 - v, 1.0], v, j != 1 and n % 3 != 0)
              for n, c in enumerate(stage.candidates) for j, pid in enumerate(c.prompt_ids)
              for v in [((n * 7 + j * 5) % 11) / 11]]
    write_jsonl(root / "scores.jsonl", scores)
    export = train_tiny_retriever(root)
    return root, export
