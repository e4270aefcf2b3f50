"""The lean BERT query path gives the library forward's vectors, and steps aside where it can't."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from serve.lean_bert import LeanBert, LeanQueryEncoder, lean_query_encoder
from serve.prompt_retriever import encode_queries

QUERIES = [
    "Is this review positive or negative? A dull film.",
    "Premise: the fox sat on the mat. Hypothesis: an animal sat. Does the premise entail it?",
    "Which came first?",
]


@pytest.fixture(scope="module")
def st_model(retriever_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(retriever_dir), device="cpu")


def _query_bert(st):
    return st[0].sub_modules["query"][0].model


def test_lean_bert_equals_bert_model_last_hidden_state(st_model):
    bert = _query_bert(st_model).eval()
    features = st_model.preprocess(QUERIES, task="query")  # padded: the mask path runs
    assert not bool(features["attention_mask"].all())
    with torch.inference_mode():
        want = bert(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                    token_type_ids=features["token_type_ids"]).last_hidden_state
        got = LeanBert(bert)(features["input_ids"], features["attention_mask"],
                             features["token_type_ids"])  # (batch, seq, hidden)
    mask = features["attention_mask"].bool()  # padded positions are never pooled
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-5)


def test_serving_path_uses_lean_encoder_and_matches_encode_query(st_model):
    assert isinstance(lean_query_encoder(st_model), LeanQueryEncoder)
    expected = st_model.encode_query(QUERIES, convert_to_numpy=True)  # (3, dim)
    np.testing.assert_allclose(encode_queries(st_model, QUERIES), expected, atol=1e-6)
    for i, query in enumerate(QUERIES):  # unpadded single queries: the no-mask path
        np.testing.assert_allclose(encode_queries(st_model, [query])[0], expected[i], atol=1e-6)
    np.testing.assert_allclose(encode_queries(st_model, QUERIES, lean=False), expected, atol=1e-6)


def test_lean_encoder_steps_aside_for_hooks_replaced_layers_and_other_models(st_model):
    hooked = copy.deepcopy(st_model)
    _query_bert(hooked).encoder.layer[0].register_forward_hook(lambda *args: None)
    assert LeanQueryEncoder.wrap(hooked) is None

    adapted = copy.deepcopy(st_model)
    layer = _query_bert(adapted).encoder.layer[0]
    layer.intermediate.dense = torch.nn.Sequential(layer.intermediate.dense)  # an adapter's shape
    assert LeanQueryEncoder.wrap(adapted) is None
    np.testing.assert_allclose(encode_queries(adapted, QUERIES),
                               adapted.encode_query(QUERIES, convert_to_numpy=True), atol=1e-6)

    from sentence_transformers import SentenceTransformer

    plain = SentenceTransformer(modules=list(st_model[0].sub_modules["query"]), device="cpu")
    assert LeanQueryEncoder.wrap(plain) is None  # no Router: not an export


def test_probe_turns_lean_path_off_when_vectors_would_differ(st_model, caplog):
    changed = copy.deepcopy(st_model)
    for layer in _query_bert(changed).encoder.layer:  # not a layout check catches: only the probe
        layer.intermediate.intermediate_act_fn = torch.nn.ReLU()
    with caplog.at_level("WARNING", logger="serve.lean_bert"):
        assert LeanQueryEncoder.wrap(changed) is None
    assert "probe vectors differ" in caplog.text
    np.testing.assert_allclose(encode_queries(changed, QUERIES),
                               changed.encode_query(QUERIES, convert_to_numpy=True), atol=1e-6)
