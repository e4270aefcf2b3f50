"""Small JSONL fixtures for the retriever tests: a pool, scored training queries, a tiny encoder."""

from __future__ import annotations

from pathlib import Path

import pytest

from flan_data.schema import Prompt, Query, Score, write_jsonl

WORDS = ["film", "cat", "mat", "phone", "radio", "field", "dog", "fox", "answer", "premise"]


def make_pool(n: int = 12) -> list[Prompt]:
    return [
        Prompt(id=f"p{i}", task="sst2" if i % 2 else "rte", cluster="sentiment" if i % 2 else "nli",
               template=0, text=f"{WORDS[i % 10]} {WORDS[(i * 3) % 10]} answer: yes {i}")
        for i in range(n)
    ]


def make_queries(n: int = 8) -> list[Query]:
    return [
        Query(id=f"q{i}", task="rte", cluster="nli", template=0,
              input=f"premise: the {WORDS[i % 10]} sat. hypothesis?", options=["yes", "no"],
              gold=i % 2)
        for i in range(n)
    ]


def make_scores(queries: list[Query], pool: list[Prompt], n_candidates: int = 4) -> list[Score]:
    scores = []
    for qi, q in enumerate(queries):
        for j in range(n_candidates):
            p = pool[(qi + j * 3) % len(pool)]
            score = ((qi * 7 + j * 5) % 11) / 11
            scores.append(Score(query_id=q.id, prompt_id=p.id, lm="tiny", template=0,
                                option_losses=[1.0 - score, 1.0], score=score,
                                correct=j != 1))
    return scores


@pytest.fixture
def train_files(tmp_path: Path) -> dict[str, Path]:
    pool, queries = make_pool(), make_queries()
    paths = {"pool": tmp_path / "pool.jsonl", "queries": tmp_path / "queries.jsonl",
             "scores": tmp_path / "scores.jsonl"}
    write_jsonl(paths["pool"], pool)
    write_jsonl(paths["queries"], queries)
    write_jsonl(paths["scores"], make_scores(queries, pool))
    return paths


@pytest.fixture
def tiny_config(tiny_bert_path):
    from retriever.model import BiEncoderConfig

    return BiEncoderConfig(base_model=str(tiny_bert_path), query_max_length=32,
                           prompt_max_length=48)


@pytest.fixture(scope="module")
def no_dropout_bert_path(tiny_bert_path, tmp_path_factory) -> Path:
    """The tiny BERT with dropout off: a chunked or split forward computes the same function."""
    from transformers import AutoModel, AutoTokenizer

    path = tmp_path_factory.mktemp("no-dropout")
    tower = AutoModel.from_pretrained(tiny_bert_path, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0)
    tower.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_bert_path).save_pretrained(path)
    return path


@pytest.fixture(name="make_pool")
def make_pool_fixture():
    """The pool builder, for tests that need a pool of a given size."""
    return make_pool


@pytest.fixture
def text_batch():
    """A collated two-query text batch with scored candidates (see `collate_examples`)."""
    from retriever.data import collate_examples

    items = [
        {"query": "the cat sat on the mat", "prompt_ids": ["a", "b", "c"],
         "prompt_texts": ["a wonderful film. positive", "the dog barked", "radio or phone"],
         "scored_ids": ["a", "b", "c"],
         "scored_texts": ["a wonderful film. positive", "the dog barked", "radio or phone"],
         "scored_lm": [0.9, 0.1, 0.2], "scored_values": [-0.1, -2.3, -1.6]},
        {"query": "which came last? radio, phone", "prompt_ids": ["d", "b", "e"],
         "prompt_texts": ["phone came last", "the dog barked", "field look stand"],
         "scored_ids": ["d", "b", "e"],
         "scored_texts": ["phone came last", "the dog barked", "field look stand"],
         "scored_lm": [0.8, 0.3, 0.1], "scored_values": [-0.2, -1.2, -2.3]},
    ]
    return collate_examples(items)
