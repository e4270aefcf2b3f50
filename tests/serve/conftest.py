"""A session-scoped exported + indexed retriever built from the tiny random BERT, and its pool."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flan_data.schema import Prompt, write_jsonl

POOL = [
    Prompt("sst2-0", "sst2", "sentiment", 0,
           "Is this review positive or negative? A wonderful, moving film. Answer: positive"),
    Prompt("sst2-1", "sst2", "sentiment", 1, "Review: the film was a dull mess. Answer: negative"),
    Prompt("rte-0", "rte", "nli", 0,
           "Premise: the cat sat on the mat. Hypothesis: an animal sat. Answer: yes"),
    Prompt("rte-1", "rte", "nli", 1,
           "Premise: the dog ran in the field. Hypothesis: the dog sat. Answer: no"),
    Prompt("piqa-0", "piqa", "commonsense", 0,
           "Question: which technology came last? Options: radio, phone. Answer: phone"),
    Prompt("piqa-1", "piqa", "commonsense", 0,
           "Question: what does a fox do? Options: jump, read. Answer: jump"),
    Prompt("common_gen-0", "common_gen", "struct_to_text", 0,
           "Write a sentence with the words field, look, stand. The player stood looking at it."),
    Prompt("common_gen-1", "common_gen", "struct_to_text", 1,
           "Words: quick, brown, fox. Sentence: the quick brown fox jumps over the lazy dog."),
]


@pytest.fixture(scope="session")
def pool() -> list[Prompt]:
    return list(POOL)


@pytest.fixture(scope="session")
def retriever_dir(tmp_path_factory, tiny_bert_path) -> Path:
    """An export of an untrained tiny bi-encoder with `POOL` indexed beside it (read-only use)."""
    from retriever import BiEncoder, BiEncoderConfig, export_retriever, index_pool

    root = tmp_path_factory.mktemp("serve-retriever")
    out = root / "retriever"
    model = BiEncoder(BiEncoderConfig(base_model=str(tiny_bert_path), query_max_length=64,
                                      prompt_max_length=64))
    export_retriever(model, out, metadata={"trained": False, "test": "serve"})
    write_jsonl(root / "pool.jsonl", POOL)
    index_pool(out, root / "pool.jsonl")
    return out


@pytest.fixture
def retriever_copy(retriever_dir, tmp_path) -> Path:
    """A private copy of the retriever directory that a test may tamper with."""
    return Path(shutil.copytree(retriever_dir, tmp_path / "retriever"))


@pytest.fixture(scope="session")
def prompt_retriever(retriever_dir):
    from serve import PromptRetriever

    return PromptRetriever.from_pretrained(retriever_dir)


NEAR_DUPLICATES = [Prompt(f"rte-dup-{i}", "rte", "nli", 0, POOL[2].text + " ." * i)
                   for i in range(1, 4)]
"""Near-copies of POOL[2] ("rte-0"), to see MMR pick complementary prompts instead."""


@pytest.fixture(scope="session")
def dup_retriever(tmp_path_factory, tiny_bert_path):
    """A retriever whose pool holds `POOL` plus three near-duplicates of rte-0."""
    from retriever import BiEncoder, BiEncoderConfig, export_retriever, index_pool
    from serve import PromptRetriever

    root = tmp_path_factory.mktemp("serve-dup-retriever")
    model = BiEncoder(BiEncoderConfig(base_model=str(tiny_bert_path), query_max_length=64,
                                      prompt_max_length=64))
    export_retriever(model, root / "retriever", metadata={"trained": False})
    write_jsonl(root / "pool.jsonl", POOL + NEAR_DUPLICATES)
    index_pool(root / "retriever", root / "pool.jsonl")
    return PromptRetriever.from_pretrained(root / "retriever")
