"""FAISS index: equals brute force, save/load round trip, count checks, indexing a pool."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flan_data.schema import sha256_file, write_jsonl
from retriever.export import export_retriever
from retriever.index import build_index, get_search_params, search, set_search_params
from retriever.index_dir import index_pool, load_index, save_index
from retriever.index_manifest import read_manifest, verify_files
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
    verify_files(tmp_path, read_manifest(tmp_path))  # a complete directory, manifest and all
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


@pytest.mark.parametrize(("factory", "params"), [("IVF8,Flat", {"nprobe": 8}),
                                                 ("HNSW16", {"efSearch": 128}),
                                                 ("IVF8,PQ4x4", {"nprobe": 8})])
def test_factories_are_seeded_and_carry_search_params(factory, params):
    import faiss

    p_emb = _seeded(600)
    first, second = build_index(p_emb, factory, seed=3), build_index(p_emb, factory, seed=3)
    assert get_search_params(first) == params
    np.testing.assert_array_equal(faiss.serialize_index(first), faiss.serialize_index(second))
    name = next(iter(params))
    set_search_params(first, {name: 2})
    assert get_search_params(first) == {name: 2}
    with pytest.raises(ValueError, match=r"'nprobe' does not apply to a IndexFlat"):
        set_search_params(build_index(p_emb), {"nprobe": 4})


@pytest.mark.parametrize(("factory", "fraction"), [("Flat", 0.6), ("IVF512,Flat", 0.6),
                                                   ("HNSW16", 0.3), ("Flat", 0.001)])
def test_filtered_search_returns_k_allowed_ids_like_brute_force(factory, fraction):
    p_emb, q_emb = _seeded(10_000, seed=2), _seeded(20, seed=3)
    index = build_index(p_emb, factory)
    if factory.startswith("IVF"):  # ~12 allowed per list: the exact fallback must fill k=20
        set_search_params(index, {"nprobe": 1})
    allowed = np.random.default_rng(0).random(len(p_emb)) < fraction
    scores, ids = search(index, q_emb, k=20, allowed=allowed)
    subset = np.flatnonzero(allowed)
    expected = subset[np.argsort(-(q_emb @ p_emb[subset].T), axis=1)[:, :min(20, len(subset))]]
    assert ids.shape == expected.shape and allowed[ids].all()
    assert all(len(set(row)) == ids.shape[1] for row in ids)
    recall = np.mean([len(set(a) & set(b)) / ids.shape[1]
                      for a, b in zip(ids, expected, strict=True)])
    if factory == "Flat":
        assert recall == 1.0
    elif factory.startswith("HNSW"):
        assert recall >= 0.6
    np.testing.assert_allclose(scores, np.take_along_axis(q_emb @ p_emb.T, ids, 1), atol=1e-5)


def _indexed(tmp_path, tiny_config, make_pool, factory, n=40, **kwargs):
    model = BiEncoder(tiny_config)
    out = export_retriever(model, tmp_path / "exp", {})
    write_jsonl(tmp_path / "pool.jsonl", make_pool(n))
    index_pool(out, tmp_path / "pool.jsonl", factory=factory, batch_size=16, **kwargs)
    return model, out


def test_pq_index_saves_exact_embeddings_and_applies_recorded_params(tmp_path, tiny_config,
                                                                     make_pool):
    from retriever.index_dir import load_embeddings

    model, out = _indexed(tmp_path, tiny_config, make_pool, "IVF2,PQ8x4",
                          search_params={"nprobe": 2})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["index_class"] == "IndexIVFPQ" and manifest["search_params"] == {"nprobe": 2}
    assert manifest["embeddings_file"] == "prompt_embeddings.safetensors"
    assert set(manifest["sha256"]) >= {"index.faiss", "prompts.jsonl", "uprise_config.json",
                                       "prompt_embeddings.safetensors",
                                       "query_0_Transformer/model.safetensors"}
    index, prompts = load_index(out)
    assert get_search_params(index) == {"nprobe": 2}
    p_emb = model.encode_prompts([p.text for p in prompts]).numpy()
    np.testing.assert_allclose(load_embeddings(out), p_emb, atol=1e-5)


def test_add_prompts_keeps_ids_rows_and_checksums_consistent(tmp_path, tiny_config, make_pool):
    from retriever.index_dir import add_prompts, load_embeddings
    from serve import PromptRetriever

    model, out = _indexed(tmp_path, tiny_config, make_pool, "IVF2,PQ8x4", n=30)
    more = make_pool(36)[30:]
    add_prompts(out, more, batch_size=4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_prompts"] == 36 and manifest["n_added"] == 6
    index, prompts = load_index(out)
    assert prompts == make_pool(36) and index.ntotal == 36
    p_emb = model.encode_prompts([p.text for p in prompts]).numpy()
    np.testing.assert_allclose(load_embeddings(out), p_emb, atol=1e-5)  # row i = id i
    retriever = PromptRetriever.from_pretrained(out)  # checksums verified
    hit = retriever.retrieve(more[2].text, k=36)
    assert {h.id for h in hit} == {p.id for p in prompts}
    with pytest.raises(ValueError, match=r"\['p31'\] occur more than once"):
        add_prompts(out, [more[1]])
    write_jsonl(out / "prompts.jsonl", prompts[:-1])
    with pytest.raises(ValueError, match="changed since it was indexed"):
        add_prompts(out, make_pool(40)[36:])


def test_index_in_its_own_directory_checksums_exactly_its_files(tmp_path, tiny_config, make_pool):
    from retriever.index_dir import add_prompts

    export = export_retriever(BiEncoder(tiny_config), tmp_path / "exp", {})
    write_jsonl(tmp_path / "pool.jsonl", make_pool(20))
    out = index_pool(export, tmp_path / "pool.jsonl", tmp_path / "idx", factory="IVF2,PQ8x4",
                     search_params={"nprobe": 2})
    manifest = read_manifest(out)
    assert set(manifest["sha256"]) == {"index.faiss", "prompts.jsonl",
                                       "prompt_embeddings.safetensors"}
    verify_files(out, manifest)
    add_prompts(out, make_pool(22)[20:])
    (out / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=rf"notes.txt is not listed in manifest.json.*"
                       rf"--retriever {export} --output-dir {out} --pool .*pool.jsonl "
                       r"--factory 'IVF2,PQ8x4' --nprobe 2`, then add the 2 prompts"):
        verify_files(out, read_manifest(out))

def test_index_cli_factory_and_add(tmp_path, tiny_config, make_pool):
    from retriever.cli import index_main

    out = export_retriever(BiEncoder(tiny_config), tmp_path / "exp", {})
    write_jsonl(tmp_path / "pool.jsonl", make_pool(20))
    write_jsonl(tmp_path / "more.jsonl", make_pool(24)[20:])
    index_main(["--retriever", str(out), "--pool", str(tmp_path / "pool.jsonl"), "--factory",
                "HNSW8", "--ef-search", "40", "--no-progress"])
    index_main(["--retriever", str(out), "--pool", str(tmp_path / "more.jsonl"), "--add",
                "--no-progress"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["index_factory"] == "HNSW8" and manifest["search_params"] == {"efSearch": 40}
    assert manifest["n_prompts"] == 24 and manifest["embeddings_file"] is None


@pytest.mark.gpu
def test_gpu_build_writes_a_cpu_index_equal_to_the_cpu_build(tmp_path, make_pool):
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        pytest.skip("faiss has no GPU support or no GPU is present")
    p_emb, q_emb = _seeded(2000), _seeded(10, seed=9)
    gpu_built = build_index(p_emb, "IVF16,Flat", gpu=True)
    assert "Gpu" not in type(gpu_built).__name__
    save_index(gpu_built, make_pool(2000), tmp_path, "IVF16,Flat")
    loaded, _ = load_index(tmp_path)
    _, ids = search(loaded, q_emb, k=3)
    _, expected = search(build_index(p_emb, "Flat"), q_emb, k=3)
    assert np.mean(ids == expected) >= 0.9
