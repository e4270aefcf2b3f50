"""PromptRetriever: retrieval equals brute force, augment order and budget, tamper refusal."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from flan_data.schema import SEP, Prompt, join_context, write_jsonl
from serve import PromptRetriever, RetrievedPrompt, RetrieverDirError, build_context, count_tokens

QUERIES = [
    "Is this review positive or negative? A dull film.",
    "Premise: the fox sat on the mat. Hypothesis: an animal sat.",
    "Question: which came first? Options: radio, phone.",
]


def _brute_force(retriever: PromptRetriever, query: str) -> tuple[list[str], np.ndarray]:
    q_emb = retriever.encoder.encode_query([query], convert_to_numpy=True)  # (1, dim)
    p_emb = retriever.encoder.encode_document(
        [p.text for p in retriever.prompts], convert_to_numpy=True
    )  # (n_prompts, dim)
    scores = (q_emb @ p_emb.T)[0]  # (n_prompts,)
    order = np.argsort(-scores, kind="stable")
    return [retriever.prompts[i].id for i in order], scores[order]


@pytest.mark.parametrize("query", QUERIES)
def test_retrieve_equals_brute_force_inner_product(prompt_retriever, pool, query):
    ids, scores = _brute_force(prompt_retriever, query)
    hits = prompt_retriever.retrieve(query, k=len(pool))
    assert [h.id for h in hits] == ids
    np.testing.assert_allclose([h.score for h in hits], scores, rtol=1e-4, atol=1e-5)
    assert [h.rank for h in hits] == list(range(1, len(pool) + 1))
    by_id = {p.id: p for p in pool}
    assert all((h.text, h.task, h.cluster) == (by_id[h.id].text, by_id[h.id].task,
                                               by_id[h.id].cluster) for h in hits)


def test_retrieve_batch_matches_single_queries(prompt_retriever):
    batch = prompt_retriever.retrieve_batch(QUERIES, k=3)
    assert [[h.id for h in row] for row in batch] == [
        [h.id for h in prompt_retriever.retrieve(q, k=3)] for q in QUERIES
    ]
    assert all(len(row) == 3 for row in batch)


def test_k_larger_than_pool_and_bad_k(prompt_retriever, pool):
    assert len(prompt_retriever.retrieve(QUERIES[0], k=100)) == len(pool)
    with pytest.raises(ValueError, match="k=0"):
        prompt_retriever.retrieve(QUERIES[0], k=0)
    with pytest.raises(TypeError, match="list of queries"):
        prompt_retriever.retrieve_batch(QUERIES[0])


def test_augment_places_best_prompt_last_nearest_the_query(prompt_retriever):
    query = QUERIES[1]
    hits = prompt_retriever.retrieve(query, k=3)
    text = prompt_retriever.augment(query, k=3)
    assert text == join_context([hits[2].text, hits[1].text, hits[0].text], query)
    assert text.endswith(hits[0].text + SEP + query)
    assert text == prompt_retriever.augment(query, k=3)  # deterministic


def _hit(rank: int, text: str) -> RetrievedPrompt:
    return RetrievedPrompt(id=f"p{rank}", text=text, task="t", cluster="c", score=1.0 / rank,
                           rank=rank)


HITS = [_hit(1, "best one here"), _hit(2, "second prompt here"), _hit(3, "third prompt text")]


@pytest.mark.parametrize(
    ("max_tokens", "kept"),
    [(None, 3), (100, 3), (12, 3), (11, 2), (9, 2), (8, 1), (6, 1), (5, 0), (3, 0)],
)
def test_budget_drops_lowest_ranked_prompts_first(max_tokens, kept):
    query = "the query text"  # 3 words; each prompt is 3 words
    text = build_context(query, HITS, max_tokens=max_tokens)
    assert text == join_context([h.text for h in reversed(HITS[:kept])], query)
    if max_tokens is not None:
        assert count_tokens(text) <= max_tokens


def test_query_over_budget_is_returned_whole_with_a_warning(caplog):
    query = "a long query that is never truncated"
    with caplog.at_level(logging.WARNING, logger="serve.context"):
        assert build_context(query, HITS, max_tokens=2) == query
    assert "over the budget of 2" in caplog.text


def test_budget_counts_with_the_given_hf_tokenizer(tiny_llama_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_path)
    query = "Premise: the cat sat."
    full = build_context(query, HITS)
    n_full = len(tok(full, add_special_tokens=False)["input_ids"])
    assert count_tokens(full, tok) == n_full != count_tokens(full)
    assert build_context(query, HITS, max_tokens=n_full, tokenizer=tok) == full
    shorter = build_context(query, HITS, max_tokens=n_full - 1, tokenizer=tok)
    assert shorter == join_context([HITS[1].text, HITS[0].text], query)


def test_budget_rejects_non_positive_values():
    with pytest.raises(ValueError, match="max_tokens=0"):
        build_context("q", HITS, max_tokens=0)


def test_refuses_index_and_prompts_of_different_sizes(retriever_copy, pool):
    write_jsonl(retriever_copy / "prompts.jsonl", pool[:-1])
    with pytest.raises(RetrieverDirError, match=r"prompts.jsonl: sha256"):
        PromptRetriever.from_pretrained(retriever_copy)  # checksums are checked first
    with pytest.raises(ValueError, match=r"holds 8 vectors but prompts.jsonl has 7") as err:
        PromptRetriever.from_pretrained(retriever_copy, verify=False)
    assert str(retriever_copy) in str(err.value)


def test_refuses_manifest_count_that_disagrees(retriever_copy):
    manifest = json.loads((retriever_copy / "manifest.json").read_text())
    manifest["n_prompts"] = 5
    (retriever_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RetrieverDirError, match=r"n_prompts is 5 but prompts.jsonl rows is 8"):
        PromptRetriever.from_pretrained(retriever_copy)


def test_refuses_manifest_dim_that_disagrees(retriever_copy):
    manifest = json.loads((retriever_copy / "manifest.json").read_text())
    manifest["embedding_dim"] = 7
    (retriever_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RetrieverDirError, match=r"embedding_dim is 7 but index.faiss dim is 32"):
        PromptRetriever.from_pretrained(retriever_copy)


def test_refuses_edited_prompts_by_checksum_unless_told(retriever_copy, pool):
    edited = [Prompt(p.id, p.task, p.cluster, p.template, p.text + "!") for p in pool]
    write_jsonl(retriever_copy / "prompts.jsonl", edited)
    with pytest.raises(RetrieverDirError, match="sha256"):
        PromptRetriever.from_pretrained(retriever_copy)
    loaded = PromptRetriever.from_pretrained(retriever_copy, verify=False)
    assert loaded.prompts[0].text.endswith("!")


def test_refuses_a_directory_without_manifest(retriever_copy, tmp_path):
    (retriever_copy / "manifest.json").unlink()
    with pytest.raises(RetrieverDirError, match="uprise index"):
        PromptRetriever.from_pretrained(retriever_copy)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PromptRetriever.from_pretrained(tmp_path / "nowhere")


def test_refuses_an_index_of_another_type_than_the_manifest_says(retriever_copy):
    manifest = json.loads((retriever_copy / "manifest.json").read_text())
    manifest["index_factory"] = "HNSW32"
    (retriever_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RetrieverDirError, match=r"'HNSW32' \(IndexHNSWFlat\).*IndexFlatIP"):
        PromptRetriever.from_pretrained(retriever_copy)


def test_refuses_tampered_tower_weights(retriever_copy):
    weights = retriever_copy / "query_0_Transformer" / "model.safetensors"
    manifest = json.loads((retriever_copy / "manifest.json").read_text())
    assert "query_0_Transformer/model.safetensors" in manifest["sha256"]
    assert manifest["index_class"] == "IndexFlatIP" and manifest["search_params"] == {}
    with open(weights, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(RetrieverDirError, match=r"model.safetensors: sha256"):
        PromptRetriever.from_pretrained(retriever_copy)


def test_plain_sentence_transformers_gives_the_same_vectors(prompt_retriever, retriever_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(retriever_dir), device="cpu")
    np.testing.assert_allclose(st.encode_query(QUERIES), prompt_retriever.encode_queries(QUERIES),
                               atol=1e-6)
    texts = [p.text for p in prompt_retriever.prompts]
    stored = prompt_retriever.prompt_vectors(np.arange(len(texts)))  # what the index holds
    np.testing.assert_allclose(st.encode_document(texts), stored, atol=1e-5)


def test_query_encoding_equals_encode_query_in_and_beyond_one_batch(retriever_dir):
    from sentence_transformers import SentenceTransformer

    from serve.prompt_retriever import encode_queries

    st = SentenceTransformer(str(retriever_dir), device="cpu")
    queries = [QUERIES[i % 3] + " more words" * (i % 4) for i in range(7)]  # padded batch
    expected = st.encode_query(queries, convert_to_numpy=True)  # (7, dim)
    st.train()  # dropout on: the one-batch path must still run the tower in eval mode
    one_batch = encode_queries(st, queries)
    assert one_batch.dtype == np.float32 and one_batch.flags.c_contiguous
    np.testing.assert_allclose(one_batch, expected, atol=1e-6)
    np.testing.assert_allclose(encode_queries(st, queries[4:5]), expected[4:5], atol=1e-6)
    np.testing.assert_allclose(encode_queries(st, queries, batch_size=2), expected, atol=1e-6)
