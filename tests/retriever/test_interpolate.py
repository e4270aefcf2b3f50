"""Weight-space interpolation of a trained retriever with its start (`retriever.interpolate`):
the ends are the two exports, the middle is the weight average, mismatches fail by name."""

from __future__ import annotations

import json

import pytest
import torch

from retriever.export import CONFIG_NAME, export_retriever, load_retriever_encoder
from retriever.interpolate import interpolate_encoders, load_interpolated
from retriever.model import BiEncoder

TEXTS = ["a wonderful, moving film. answer: positive", "premise: the cat sat on the mat."]


@pytest.fixture
def exports(tmp_path, tiny_config):
    """(start, trained): an untrained tiny export and one whose towers moved away from it."""
    torch.manual_seed(0)
    model = BiEncoder(tiny_config)
    start = export_retriever(model, tmp_path / "start", {"trained": False})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return start, export_retriever(model, tmp_path / "trained", {"trained": True})


def _encode(st):
    return st.encode_query(TEXTS, convert_to_tensor=True), st.encode_document(
        TEXTS, convert_to_tensor=True)


@pytest.mark.parametrize("alpha, end", [(1.0, "trained"), (0.0, "start")])
def test_the_ends_are_the_two_exports(exports, alpha, end):
    start, trained = exports
    st, config = load_interpolated(trained, start, alpha, device="cpu")
    want, _ = load_retriever_encoder(trained if end == "trained" else start, device="cpu")
    for got, ref in zip(_encode(st), _encode(want), strict=True):
        assert torch.allclose(got, ref, atol=1e-6)
    assert config["metadata"] == {"trained": True}


def test_the_middle_is_the_weight_average(exports):
    start, trained = exports
    a, _ = load_retriever_encoder(start, device="cpu")
    b, _ = load_retriever_encoder(trained, device="cpu")
    want = {k: (v, b.state_dict()[k]) for k, v in a.state_dict().items()}
    mixed = load_interpolated(trained, start, 0.25, device="cpu")[0].state_dict()
    assert set(mixed) == set(want)
    for k, (v0, v1) in want.items():
        assert torch.allclose(mixed[k], 0.75 * v0 + 0.25 * v1, atol=1e-7), k
    # between the ends, the embeddings are neither end's
    assert not torch.allclose(_encode(load_interpolated(trained, start, 0.5)[0])[0],
                              _encode(b)[0], atol=1e-4)


def _with_steps(steps: list[int]) -> torch.nn.Module:
    module = torch.nn.Linear(2, 3)
    module.register_buffer("steps", torch.tensor(steps))
    return module


def test_integer_buffers_must_agree_and_are_kept():
    torch.manual_seed(0)
    start, trained = _with_steps([1, 2]), _with_steps([1, 2])
    want = torch.lerp(start.weight, trained.weight, 0.5).detach()
    mixed = interpolate_encoders(start, trained, 0.5)
    assert torch.equal(mixed.steps, torch.tensor([1, 2]))
    assert torch.allclose(mixed.weight, want)
    with pytest.raises(ValueError, match="non-float buffer 'steps' differs"):
        interpolate_encoders(_with_steps([1, 3]), _with_steps([1, 2]), 0.5)


def test_bad_alpha_and_mismatched_models_fail_by_name(exports, tmp_path, tiny_config):
    start, trained = exports
    with pytest.raises(ValueError, match=r"alpha=1.5; expected a number in \[0, 1\]"):
        load_interpolated(trained, start, 1.5)
    with pytest.raises(ValueError, match=r"weight 'weight' has shape \(3, 2\) in the trained"):
        interpolate_encoders(torch.nn.Linear(2, 4), torch.nn.Linear(2, 3), 0.5)
    with pytest.raises(ValueError, match="differ in 1 weight names"):
        interpolate_encoders(torch.nn.Linear(2, 3, bias=False), torch.nn.Linear(2, 3), 0.5)
    odd = export_retriever(BiEncoder(tiny_config), tmp_path / "other", {})
    config = json.loads((odd / CONFIG_NAME).read_text())
    config["encoder"]["base_model"] += "-other"
    (odd / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="-other'; give the untrained export"):
        load_interpolated(trained, odd, 0.5)
