"""Positive / hard-negative selection, score folders, collation and the DataModule."""

from __future__ import annotations

import json

import pytest
import torch

from flan_data.schema import Score, write_json, write_jsonl
from retriever.data import (
    RetrieverDataModule,
    build_training_examples,
    collate_examples,
    read_scores,
)


def s(q, p, score, correct):
    return Score(query_id=q, prompt_id=p, lm="lm", template=0, option_losses=[0.0], score=score,
                 correct=correct)


def test_positive_is_best_correct_and_negatives_are_lowest(caplog):
    scores = [
        s("q1", "a", 0.9, False),  # best score but wrong: never the positive
        s("q1", "b", 0.7, True),
        s("q1", "c", 0.8, True),
        s("q1", "d", 0.1, False),
        s("q1", "e", 0.2, True),
        s("q2", "a", 0.5, False),  # q2: no correct candidate -> dropped
        s("q2", "b", 0.6, False),
        s("q3", "x", -1.0, None),  # generation: any candidate qualifies
        s("q3", "y", -0.5, None),
    ]
    with caplog.at_level("INFO", logger="retriever.data"):
        examples = build_training_examples(scores, n_hard_negatives=2)
    assert [ex.query_id for ex in examples] == ["q1", "q3"]
    q1, q3 = examples
    assert q1.positive_id == "c" and q1.negative_ids == ("d", "e")
    assert q1.lm_scores == (0.8, 0.1, 0.2)
    assert q3.positive_id == "y" and q3.negative_ids == ("x",)
    assert "1 dropped" in caplog.text


def test_ties_do_not_depend_on_input_order():
    scores = [s("q", "b", 0.5, True), s("q", "a", 0.5, True), s("q", "c", 0.5, True)]
    first = build_training_examples(scores, 1)
    assert first == build_training_examples(scores[::-1], 1)
    assert first[0].positive_id == "a" and first[0].negative_ids == ("b",)


def test_read_scores_from_a_shard_folder(tmp_path):
    write_jsonl(tmp_path / "shard-00001.jsonl", [s("q2", "b", 0.2, True)])
    write_jsonl(tmp_path / "shard-00000.jsonl", [s("q1", "a", 0.1, True)])
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        read_scores(tmp_path)
    write_json(tmp_path / "manifest.json", {"complete": True})
    assert [x.query_id for x in read_scores(tmp_path)] == ["q1", "q2"]
    write_json(tmp_path / "manifest.json", {"shards": [{"file": "shard-00001.jsonl",
                                                        "complete": True}]})
    assert [x.query_id for x in read_scores(tmp_path)] == ["q2"]
    write_json(tmp_path / "manifest.json", {"shards": [{"file": "shard-00001.jsonl",
                                                        "complete": False}]})
    with pytest.raises(ValueError, match="incomplete"):
        read_scores(tmp_path)


def test_collate_dedupes_prompts_and_indexes_positives():
    items = [
        {"query": "q1", "prompt_ids": ["a", "b"], "prompt_texts": ["A", "B"],
         "lm_scores": [0.9, 0.1]},
        {"query": "q2", "prompt_ids": ["b", "c", "a"], "prompt_texts": ["B", "C", "A"],
         "lm_scores": [0.8, 0.2, 0.3]},
    ]
    batch = collate_examples(items)
    assert batch["prompts"] == ["A", "B", "C"]
    assert batch["positive_idx"].tolist() == [0, 1]
    assert batch["candidate_idx"].tolist() == [[0, 1, -1], [1, 2, 0]]
    assert torch.allclose(batch["lm_scores"], torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.3]]))


def _batches(dm):
    return [json.dumps(b["queries"] + b["prompts"]) for b in dm.train_dataloader()]


def test_datamodule_is_deterministic_with_the_seed(train_files):
    def make(seed):
        dm = RetrieverDataModule(train_files["scores"], train_files["queries"],
                                 train_files["pool"], batch_size=3, n_hard_negatives=2,
                                 val_fraction=0.25, seed=seed)
        dm.setup("fit")
        return dm

    a, b, c = make(1), make(1), make(2)
    assert len(a.train_set) == 6 and len(a.val_set) == 2
    assert _batches(a) == _batches(b)
    assert _batches(a) != _batches(c)
    batch = next(iter(a.train_dataloader()))
    assert batch["positive_idx"].shape == (3,)
    assert all(len(row) == 3 for row in batch["candidate_idx"].tolist())


def test_datamodule_with_nothing_to_learn_is_a_clear_error(tmp_path, train_files):
    write_jsonl(tmp_path / "bad.jsonl", [s("q0", "p0", 0.1, False)])
    dm = RetrieverDataModule(tmp_path / "bad.jsonl", train_files["queries"], train_files["pool"])
    with pytest.raises(ValueError, match="nothing to train on"):
        dm.setup("fit")
