"""FAISS index: equals brute force, save/load round trip, count checks, indexing a pool."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flan_data.schema import write_jsonl
from retriever.export import export_retriever
from retriever.index import build_index, index_pool, load_index, save_index, search, sha256_file
from retriever.model import BiEncoder


def _seeded(n, dim=16, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_faiss_equals_brute_force_inner_product(factory):
    p_emb, q_emb = _seeded(200, seed=0), _seeded(10, seed=1)
    scores, ids = search(build_index(p_emb, factory), q_emb, k=5)
    sims = q_emb @ p_emb.T  # (10, 200)
    expected = np.argsort(-sims, axis=1)[:, :5]
    assert ids.shape == (10, 5)
    if factory == "Flat":
        np.testing.assert_array_equal(ids, expected)
    else:  # approximate search: check recall of the true top-5
        recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids, expected, strict=True)])
        assert recall >= 0.9
    np.testing.assert_allclose(scores, np.take_along_axis(sims, ids, axis=1), atol=1e-5)


def test_k_larger_than_pool_returns_the_whole_pool():
    scores, ids = search(build_index(_seeded(3)), _seeded(2, seed=5), k=10)
    assert ids.shape == (2, 3) and sorted(ids[0]) == [0, 1, 2]


def test_save_load_round_trip_and_count_mismatch(tmp_path, make_pool):
    prompts = make_pool(6)
    index = build_index(_seeded(6))
    save_index(index, prompts, tmp_path)
    loaded, loaded_prompts = load_index(tmp_path)
    assert loaded.ntotal == 6 and loaded_prompts == prompts
    write_jsonl(tmp_path / "prompts.jsonl", prompts[:4])
    with pytest.raises(ValueError, match="holds 6 vectors but prompts.jsonl has 4 prompts"):
        load_index(tmp_path)
    with pytest.raises(ValueError, match="6 vectors but 5 prompts"):
        save_index(index, prompts[:5], tmp_path)


def test_index_pool_writes_index_and_manifest_beside_the_export(tmp_path, tiny_config, make_pool):
    model = BiEncoder(tiny_config)
    out = export_retriever(model, tmp_path / "exp", {})
    pool = make_pool(9)
    write_jsonl(tmp_path / "pool.jsonl", pool)
    index_pool(out, tmp_path / "pool.jsonl", batch_size=4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_prompts"] == 9 and manifest["embedding_dim"] == 32
    assert manifest["index_factory"] == "Flat"
    assert manifest["sha256"]["index.faiss"] == sha256_file(out / "index.faiss")
    assert manifest["sha256"]["prompts.jsonl"] == sha256_file(out / "prompts.jsonl")
    index, prompts = load_index(out)
    assert prompts == pool
    q_emb = model.encode_queries([pool[3].text]).numpy()
    _, ids = search(index, q_emb, k=9)
    p_emb = model.encode_prompts([p.text for p in pool]).numpy()
    np.testing.assert_array_equal(ids[0], np.argsort(-(q_emb @ p_emb.T)[0]))
