"""Fixtures of the `uprise eval` tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from flan_data.stage_io import POOL, TRAIN_QUERIES


@pytest.fixture(scope="session")
def train_tiny_retriever(tiny_bert_path):
    """train(root): a tiny retriever trained one epoch on ROOT/scores.jsonl over the stage
    folder ROOT/data (a quarter of the scored queries held out for validation), exported to
    ROOT/run and indexed over the pool; returns the export."""
    from retriever import index_pool, train_retriever

    def train(root: Path) -> Path:
        export = train_retriever(root / "scores.jsonl", root / "data" / TRAIN_QUERIES,
                                 root / "data" / POOL, out_dir=root / "run",
                                 encoder=str(tiny_bert_path), epochs=1, batch_size=4, lr=1e-3,
                                 val_fraction=0.25, accelerator="cpu", progress=False)
        index_pool(export, root / "data" / POOL)
        return export

    return train
