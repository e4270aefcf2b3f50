"""A lean forward for BERT query towers: the single-query hot path of `PromptRetriever`.

Encoding one short query on a CPU, `transformers.BertModel.forward` spends a good part of its
time outside its matrix products (module calls, mask builders, attention dispatch, output
dataclasses, and the pooler head that sentence-transformers then discards): 2-5 ms of a 15-18 ms
all-MiniLM-L6-v2 call on a 2-core machine (`bench/retrieval.py` times both). `LeanBert`
computes the same last hidden state as a plain sequence of torch functional ops over the model's
own parameters, read on every call and never copied, so it cannot go stale. The pooling and
normalisation after it stay the sentence-transformers modules of the route.

In a batch, the tokens are packed: padding positions are dropped before the first layer, every
matrix product runs on the real tokens only, and only attention sees them padded back to
(batch, seq) (a batch of queries of unequal lengths otherwise spends its padding share of the
FLOPs, about 20% for `bench/serve_load.py`'s queries; the vectors are the same to the bit).

A fast path, not a fork: `LeanQueryEncoder.wrap(encoder)` accepts only the layout it reproduces
(a `Router` whose "query" route is an unmodified `BertModel` with absolute positions and exact
GELU, then `Pooling` and `Normalize`, as `retriever.export_retriever` writes it; no hooks), then
checks on a padded probe batch that it gives the library forward's vectors (within 1e-5); for
anything else it returns None and the caller keeps the library forward.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.normalize import Normalize
from sentence_transformers.base.modules.router import Router
from sentence_transformers.base.modules.transformer import Transformer
from sentence_transformers.sentence_transformer.modules.pooling import Pooling
from torch import Tensor, nn
from transformers import BertModel

from serve.features import query_features

log = logging.getLogger(__name__)

PROBE = ["a probe query", "a longer probe query, so that the probe batch holds some padding"]
PROBE_ATOL = 1e-5
_WRAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # encoder -> lean or None
_WRAP_LOCK = threading.Lock()


def lean_query_encoder(encoder: Any) -> LeanQueryEncoder | None:
    """`LeanQueryEncoder.wrap(encoder)`, decided once per encoder object (then cached)."""
    with _WRAP_LOCK:
        if encoder not in _WRAPPED:
            _WRAPPED[encoder] = LeanQueryEncoder.wrap(encoder)
        return _WRAPPED[encoder]


class LeanBert:
    """`BertModel(...).last_hidden_state` (eval mode) as functional torch ops."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.n_heads = model.config.num_attention_heads

    def __call__(self, input_ids: Tensor, attention_mask: Tensor,
                 token_type_ids: Tensor | None = None) -> Tensor:
        emb = self.model.embeddings
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = F.embedding(input_ids, emb.word_embeddings.weight) \
            + F.embedding(token_type_ids, emb.token_type_embeddings.weight)  # (batch, seq, hidden)
        x = _norm(x + emb.position_embeddings.weight[:input_ids.shape[1]], emb.LayerNorm)
        batch, seq, hidden = x.shape
        if bool(attention_mask.all()):
            for layer in self.model.encoder.layer:
                x = self._layer(layer, x.view(-1, hidden), None, None, (batch, seq))
            return x.view(batch, seq, hidden)
        mask = attention_mask[:, None, None, :].bool()  # (batch, 1, 1, seq)
        real = attention_mask.reshape(-1).nonzero().squeeze(1)  # (n_tokens,) non-padding rows
        x = x.reshape(-1, hidden)[real]  # (n_tokens, hidden): padding never enters a matmul
        for layer in self.model.encoder.layer:
            x = self._layer(layer, x, mask, real, (batch, seq))
        out = x.new_zeros(batch * seq, hidden)
        out[real] = x
        return out.view(batch, seq, hidden)  # padding positions are zeros (pooling masks them)

    def _layer(self, layer: nn.Module, x: Tensor, mask: Tensor | None, real: Tensor | None,
               shape: tuple[int, int]) -> Tensor:
        """One encoder layer on the packed tokens `x` (n_tokens, hidden); only attention sees
        them padded back to (batch, seq)."""
        att = layer.attention
        (batch, seq), hidden = shape, x.shape[-1]
        heads = (batch, seq, self.n_heads, hidden // self.n_heads)
        q, k, v = (_padded(_dense(x, m), real, batch * seq).view(heads).transpose(1, 2)
                   for m in (att.self.query, att.self.key, att.self.value))  # (b, heads, seq, hd)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (batch, heads, seq, hd)
        ctx = ctx.transpose(1, 2).reshape(batch * seq, hidden)  # (batch * seq, hidden)
        ctx = ctx if real is None else ctx[real]  # (n_tokens, hidden)
        x = _norm(_dense(ctx, att.output.dense) + x, att.output.LayerNorm)
        h = F.gelu(_dense(x, layer.intermediate.dense))  # (n_tokens, intermediate)
        return _norm(_dense(h, layer.output.dense) + x, layer.output.LayerNorm)

    @staticmethod
    def unsupported(model: Any) -> str | None:
        """Why `model` is outside what `LeanBert` reproduces exactly, or None if it is not."""
        cfg = model.config
        if type(model) is not BertModel:
            return f"{type(model).__name__} is not a plain BertModel"
        if cfg.hidden_act != "gelu" or cfg.is_decoder or getattr(cfg, "add_cross_attention", 0):
            return "not an encoder-only BERT with exact GELU"
        emb = model.embeddings
        parts = [(emb.word_embeddings, nn.Embedding), (emb.position_embeddings, nn.Embedding),
                 (emb.token_type_embeddings, nn.Embedding), (emb.LayerNorm, nn.LayerNorm)]
        for layer in model.encoder.layer:
            att = layer.attention
            parts += [(m, nn.Linear) for m in (att.self.query, att.self.key, att.self.value,
                                               att.output.dense, layer.intermediate.dense,
                                               layer.output.dense)]
            parts += [(att.output.LayerNorm, nn.LayerNorm), (layer.output.LayerNorm, nn.LayerNorm)]
        if any(type(m) is not kind for m, kind in parts):
            return "a submodule was replaced (adapter or quantised layer)"
        if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
            return "forward hooks are registered"
        return None


class LeanQueryEncoder:
    """`encoder(features, task="query")` of an exported retriever, through `LeanBert`."""

    def __init__(self, bert: LeanBert, after: list[Any]) -> None:
        self.bert = bert
        self.after = after  # the query route's modules after its Transformer (Pooling, ...)

    @classmethod
    def wrap(cls, encoder: Any) -> LeanQueryEncoder | None:
        """The lean query path of a SentenceTransformer, or None where it would differ."""
        reason = _unsupported_route(encoder)
        if reason is None:
            route = encoder[0].sub_modules["query"]
            reason = LeanBert.unsupported(route[0].model)
        if reason is not None:
            log.debug("lean query encoder off: %s", reason)
            return None
        lean = cls(LeanBert(route[0].model), list(route)[1:])
        diff = lean._probe_difference(encoder)
        if diff > PROBE_ATOL:
            log.warning("lean query encoder off: its probe vectors differ from the library "
                        "forward's by %.2g (> %g)", diff, PROBE_ATOL)
            return None
        return lean

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        """The query route's forward on preprocessed text features (inference mode, eval)."""
        features = dict(features)
        features["token_embeddings"] = self.bert(
            features["input_ids"], features["attention_mask"], features.get("token_type_ids"))
        for module in self.after:
            features = module(features)
        return features

    def _probe_difference(self, encoder: Any) -> float:
        was_training = encoder.training
        encoder.eval()
        try:
            features = query_features(encoder, PROBE)  # exactly what the serving path feeds
            with torch.inference_mode():
                want = encoder(dict(features), task="query")["sentence_embedding"]
                got = self(features)["sentence_embedding"]
            return float((want.float() - got.float()).abs().max())
        finally:
            encoder.train(was_training)


def _unsupported_route(encoder: Any) -> str | None:
    if not isinstance(encoder, SentenceTransformer) or len(encoder) != 1:
        return "not a one-module SentenceTransformer"
    router = encoder[0]
    if not isinstance(router, Router) or router.route_mappings or "query" not in router.sub_modules:
        return "not a Router with a plain 'query' route"
    kinds = [type(m) for m in router.sub_modules["query"]]
    if kinds != [Transformer, Pooling, Normalize]:  # the layout `retriever.export_retriever` writes
        return f"query route is {[k.__name__ for k in kinds]}"
    transformer = router.sub_modules["query"][0]
    if transformer.module_output_name != "token_embeddings" or transformer.modality_config != {
            "text": {"method": "forward", "method_output_name": "last_hidden_state"}}:
        return "the Transformer module does not output last_hidden_state as token_embeddings"
    return None


def _dense(x: Tensor, linear: nn.Linear) -> Tensor:
    return F.linear(x, linear.weight, linear.bias)


def _padded(x: Tensor, real: Tensor | None, rows: int) -> Tensor:
    """Packed rows `x` (n_tokens, d) scattered to their places among `rows`, zeros elsewhere."""
    if real is None:
        return x
    out = x.new_zeros(rows, x.shape[-1])
    out[real] = x
    return out


def _norm(x: Tensor, layer_norm: nn.LayerNorm) -> Tensor:
    return F.layer_norm(x, layer_norm.normalized_shape, layer_norm.weight, layer_norm.bias,
                        layer_norm.eps)
