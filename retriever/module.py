"""The LightningModule that trains an injected `BiEncoder` on the LM-labelled batches.

Contract: batches are the text batches of `retriever.data.collate_examples`; this module
tokenizes them with the model's own tokenizer in each step, computes the loss
(`info_nce`, optionally plus `distill_kl`) and logs `train/loss`, `val/loss` and `val/top1`
(share of queries whose positive ranks first among all prompts of the batch). The network
itself is not saved in the hyperparameters: export it with `retriever.export_retriever`.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch

from retriever.losses import distill_kl, info_nce
from retriever.model import BiEncoder

LossName = Literal["info_nce", "info_nce+kl"]


class RetrieverModule(L.LightningModule):
    """Contrastive training of the query and prompt towers.

    Args:
        model: the bi-encoder to train (injected; see `retriever.cli` for how the CLI builds it).
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_steps: linear warm-up steps, then linear decay to 0 at the last step.
        temperature: logits = inner product / temperature (0.05 suits normalised embeddings).
        loss: "info_nce" (UPRISE) or "info_nce+kl" (adds LLM-R style distillation of LM scores).
        kl_weight: weight of the KL term when `loss="info_nce+kl"`.
        lm_temperature: temperature of the LM score distribution in the KL term.
    """

    def __init__(
        self,
        model: BiEncoder,
        lr: float = 3e-5,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        temperature: float = 0.05,
        loss: LossName = "info_nce",
        kl_weight: float = 1.0,
        lm_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if loss not in ("info_nce", "info_nce+kl"):
            raise ValueError(f"loss={loss!r}; expected 'info_nce' or 'info_nce+kl'.")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}; expected a positive number.")
        self.save_hyperparameters(ignore=["model"])
        self.model = model

    def _tokenized(self, texts: list[str], tokenize) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in tokenize(texts).items()}

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q_emb, p_emb = self.model(
            self._tokenized(batch["queries"], self.model.tokenize_queries),  # (batch, seq)
            self._tokenized(batch["prompts"], self.model.tokenize_prompts),  # (n_prompts, seq)
        )  # (batch, dim), (n_prompts, dim)
        t = self.hparams.temperature
        loss = info_nce(q_emb, p_emb, batch["positive_idx"], temperature=t)
        if self.hparams.loss == "info_nce+kl":
            cand = batch["candidate_idx"]  # (batch, n_cand)
            p_emb_per_query = p_emb[cand.clamp(min=0)]  # (batch, n_cand, dim)
            kl = distill_kl(q_emb, p_emb_per_query, batch["lm_scores"], mask=cand >= 0,
                            temperature=t, lm_temperature=self.hparams.lm_temperature)
            loss = loss + self.hparams.kl_weight * kl
        return loss, q_emb, p_emb

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["queries"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, q_emb, p_emb = self._loss(batch)
        top1 = ((q_emb @ p_emb.T).argmax(dim=-1) == batch["positive_idx"]).float().mean()
        n = len(batch["queries"])
        self.log("val/loss", loss, prog_bar=True, batch_size=n)
        self.log("val/top1", top1, prog_bar=True, batch_size=n)

    def configure_optimizers(self) -> dict[str, Any]:
        from transformers import get_linear_schedule_with_warmup

        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            is_norm = "LayerNorm" in name or "layer_norm" in name or "norm.weight" in name
            (no_decay if name.endswith("bias") or is_norm else decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, min(self.hparams.warmup_steps, total), total
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "step"}}
