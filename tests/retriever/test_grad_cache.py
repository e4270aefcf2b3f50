"""Gradient caching: the same parameter gradients as the plain backward, at chunk-sized memory."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from retriever.grad_cache import grad_cached_backward
from retriever.losses import info_nce
from retriever.model import BiEncoder, BiEncoderConfig
from retriever.module import RetrieverModule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_train_worker import GradsBeforeStep  # noqa: E402

QUERIES = ["the cat sat on the mat", "which came last? radio, phone", "a dog", "fox field look"]
PROMPTS = ["a wonderful film. positive", "the dog barked", "radio or phone", "phone came last",
           "field look stand", "the quick brown fox", "cat", "mat answer yes"]


def _inputs(model: BiEncoder):
    return model.tokenize_queries(QUERIES), model.tokenize_prompts(PROMPTS)


def _loss(q_emb: torch.Tensor, p_emb: torch.Tensor) -> torch.Tensor:
    positives = torch.tensor([0, 3, 1, 5])  # (batch,)
    return info_nce(q_emb, p_emb, positives, temperature=0.05)


def _grads(model: BiEncoder) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                 atol: float = 1e-6, rtol: float = 1e-4) -> None:
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        diff = float((a[name] - b[name]).abs().max())
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=rtol,
                                   msg=f"{name}: max |diff| {diff:.3g}")


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_eval_mode_gradients_equal_the_full_batch_backward(tiny_config, chunk):
    torch.manual_seed(0)
    # float64: chunks sum a parameter's gradient in another order than the full batch, and at
    # temperature 0.05 float32 rounding of that order alone reaches ~3e-6 on shared embeddings
    model = BiEncoder(tiny_config).double().eval()
    q_tok, p_tok = _inputs(model)
    plain = _loss(model.embed_queries(q_tok), model.embed_prompts(p_tok))
    plain.backward()
    reference = _grads(model)
    loss, (q_emb, p_emb) = grad_cached_backward(
        [model.embed_queries, model.embed_prompts], [q_tok, p_tok], _loss, chunk)
    assert loss.item() == pytest.approx(plain.item(), abs=1e-12)
    assert q_emb.shape == (4, 32) and p_emb.shape == (8, 32) and not q_emb.requires_grad
    _assert_same(_grads(model), reference, atol=1e-10, rtol=1e-8)


def test_dropout_masks_are_replayed_chunk_by_chunk(tiny_config):
    """In train mode the re-forward draws each chunk's dropout masks again: the gradients equal
    a plain backward through the same chunked forward from the same seed, and differ from a
    forward whose masks were not replayed."""
    model = BiEncoder(tiny_config).double().train()  # float64, as above
    q_tok, p_tok = _inputs(model)
    rows = lambda tok, a, b: {k: v[a:b] for k, v in tok.items()}  # noqa: E731

    torch.manual_seed(7)
    q_emb = torch.cat([model.embed_queries(rows(q_tok, a, a + 2)) for a in (0, 2)])
    p_emb = torch.cat([model.embed_prompts(rows(p_tok, a, a + 2)) for a in (0, 2, 4, 6)])
    _loss(q_emb, p_emb).backward()
    reference = _grads(model)

    torch.manual_seed(7)
    grad_cached_backward([model.embed_queries, model.embed_prompts], [q_tok, p_tok], _loss, 2)
    _assert_same(_grads(model), reference, atol=1e-10, rtol=1e-8)

    torch.manual_seed(8)  # other masks: the comparison above is not vacuous
    _loss(model.embed_queries(q_tok), model.embed_prompts(p_tok)).backward()
    other = _grads(model)
    assert any(not torch.allclose(other[n], reference[n], atol=1e-6) for n in reference)


def test_bad_arguments_are_refused(tiny_config):
    model = BiEncoder(tiny_config)
    q_tok, p_tok = _inputs(model)
    with pytest.raises(ValueError, match="chunk_size=0"):
        grad_cached_backward([model.embed_queries, model.embed_prompts], [q_tok, p_tok], _loss, 0)
    with pytest.raises(ValueError, match="1 embedders for 2 inputs"):
        grad_cached_backward([model.embed_queries], [q_tok, p_tok], _loss, 2)
    with pytest.raises(ValueError, match="grad_cache_chunk=-1"):
        RetrieverModule(model, grad_cache_chunk=-1)


@pytest.mark.parametrize("loss", ["info_nce", "info_nce+kl"])
def test_a_lightning_step_with_grad_cache_equals_the_plain_step(no_dropout_bert_path, loss,
                                                                text_batch):
    """A real Trainer step (manual optimisation) sees the plain step's gradients and moves the
    weights like it (dropout off, so chunking cannot change the forward)."""
    config = BiEncoderConfig(base_model=str(no_dropout_bert_path), query_max_length=32,
                             prompt_max_length=48)
    results = []
    for chunk in (0, 1):
        torch.manual_seed(0)
        module = RetrieverModule(BiEncoder(config), lr=1e-3, loss=loss, grad_cache_chunk=chunk)
        grads = GradsBeforeStep()
        trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[grads])
        batches = torch.utils.data.DataLoader([text_batch], batch_size=None)
        trainer.fit(module, train_dataloaders=batches)
        assert trainer.global_step == 1
        results.append((grads.grads, {n: p.detach().clone()
                                      for n, p in module.model.named_parameters()}))
    (plain_grads, plain_weights), (cached_grads, cached_weights) = results
    # float32 sums over chunks and over the whole batch round differently: position-embedding
    # gradients sum hundreds of token terms, so allow 1e-5 here (the tests above run in float64)
    _assert_same(cached_grads, plain_grads, atol=1e-5)
    # AdamW's first step moves each weight by about lr * sign(grad): compare where the gradient
    # is clearly non-zero (some are zero in exact arithmetic, e.g. attention key biases)
    moved = 0
    for name, grad in plain_grads.items():
        clear = grad.abs() > 1e-5
        torch.testing.assert_close(cached_weights[name][clear], plain_weights[name][clear],
                                   atol=1e-6, rtol=1e-4, msg=name)
        moved += int(clear.sum())
    assert moved > 1000
