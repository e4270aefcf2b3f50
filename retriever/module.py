"""The LightningModule that trains an injected `BiEncoder` on the LM-labelled batches.

Contract: batches are the text batches of `retriever.data.collate_examples`; this module
tokenizes them with the model's own tokenizer in each step, computes the loss
(`info_nce`, optionally plus `distill_kl`) and logs `train/loss`, `val/loss`,
`val/batch_top1` (share of queries whose positive ranks first among all prompts of the batch)
and the ranking diagnostics of `retriever.ranking` over each validation query's scored
candidates against the LM's own scores (`val/ndcg@3`, `val/top1`, `val/spearman`).
Every validation pass is kept in `ranking_history` (a `trainer.validate` before `fit` is the
untrained reference); with `select_best`, the weights of the best fit epoch by `val/ndcg@3`
are kept in memory and `restore_best()` puts them back before export. With
`keep_start_if_best` (default) the reference pass competes too: when no epoch beats the
untrained towers on validation, their starting weights are what is exported (training that
only hurts the LM's ranking never replaces the encoder it started from). The network itself is
not saved in the hyperparameters: export it with `retriever.export_retriever`.

Resuming from a checkpoint (`fit(ckpt_path=...)`) gives the weights of an uninterrupted run:
before every training batch the torch RNG is reseeded from (`seed`, epoch, batch index, rank),
so dropout draws the same masks whether or not the run was interrupted (fairseq seeds each
update the same way), and the validation history with the best epoch's weights travel in the
checkpoint (`SELECTION_KEY`), so `select_best` chooses among every epoch, not only the resumed
ones (an epoch whose validation the checkpoint preceded is validated on resume,
`on_train_start`). The data order is the DataModule's part (`retriever.data.ResumableLoader`).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any, get_args

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from retriever.gather import gather_prompts
from retriever.grad_cache import grad_cached_backward
from retriever.losses import distill_kl, info_nce
from retriever.model import BiEncoder
from retriever.ranking import METRICS, ranking_metrics
from retriever.settings import LossName

SELECT_METRIC = METRICS[0]
"""The validation ranking metric that picks the exported epoch."""
SELECTION_KEY = "retriever_selection"
"""The checkpoint entry holding the validation history and the best epoch's weights."""


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
        lm_temperature: temperature of the KL target `softmax(label value / lm_temperature)`;
            label values are log-probabilities (`retriever.labels`), so a low temperature.
        select_best: keep the weights of the best epoch by validation `ndcg@3`.
        keep_start_if_best: count the untrained reference pass (a `trainer.validate` before
            `fit`) as a candidate of `select_best`; epochs must beat it strictly.
        gather_negatives: on several devices, every rank's prompts are in-batch negatives of
            every query (`retriever.gather`), but for another rank's copy of a prompt the query
            already sees and the prompts its LM scores value as high as its positive; no
            effect on one device.
        grad_cache_chunk: 0 (off) or the rows per forward pass of gradient caching
            (`retriever.grad_cache`): large batches (many negatives) at one chunk's activation
            memory, for one extra forward per chunk; switches to manual optimisation, one
            device only.
        seed: seeds dropout: each training batch reseeds the torch RNG from (seed, epoch, batch
            index, rank), so a resumed run repeats the masks (the CLI links `seed_everything`).
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
        lm_temperature: float = 0.1,
        select_best: bool = True,
        keep_start_if_best: bool = True,
        gather_negatives: bool = True,
        grad_cache_chunk: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if loss not in get_args(LossName):
            raise ValueError(f"loss={loss!r}; expected one of {list(get_args(LossName))}.")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}; expected a positive number.")
        if lm_temperature <= 0:
            raise ValueError(f"lm_temperature={lm_temperature}; expected a positive number.")
        if grad_cache_chunk < 0:
            raise ValueError(f"grad_cache_chunk={grad_cache_chunk}; expected 0 (off) or a "
                             "positive number of rows per forward pass.")
        self.save_hyperparameters(ignore=["model"])
        self.automatic_optimization = grad_cache_chunk == 0
        self.model = model
        self.ranking_history: list[dict[str, Any]] = []
        self.best_ranking: dict[str, Any] | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self._val_rank: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._pending_validation: int | None = None  # see `on_train_start`
        self._validated_epoch: int | None = None  # the last fit epoch validated

    def _tokenized(self, texts: list[str], tokenize) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in tokenize(texts).items()}

    def _tokens(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], ...]:
        return (self._tokenized(batch["queries"], self.model.tokenize_queries),  # (batch, seq)
                self._tokenized(batch["prompts"], self.model.tokenize_prompts))  # (n_prompts, seq)

    def _loss(self, batch: dict[str, Any], gather: bool = False,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q_emb, p_emb = self.model(*self._tokens(batch))  # (batch, dim), (n_prompts, dim)
        return self._objective(batch, q_emb, p_emb, gather), q_emb, p_emb

    def _objective(self, batch: dict[str, Any], q_emb: torch.Tensor, p_emb: torch.Tensor,
                   gather: bool) -> torch.Tensor:
        """The loss of a batch from its embeddings, (batch, dim) and (n_prompts, dim)."""
        t = self.hparams.temperature
        p_all, positive, ignore = p_emb, batch["positive_idx"], batch.get("ignore")
        if gather:
            p_all, positive, ignore = gather_prompts(p_emb, positive, ignore,
                                                     batch.get("prompt_keys"),
                                                     batch.get("as_good_keys"))
        loss = info_nce(q_emb, p_all, positive, temperature=t, ignore=ignore)
        if self.hparams.loss == "info_nce+kl":
            scored = batch["scored_idx"]  # (batch, n_scored)
            if scored.shape[1] == 0:
                raise ValueError("loss='info_nce+kl' distils over every scored candidate; set "
                                 "data.batch_all_candidates=true so batches carry them.")
            p_emb_per_query = p_emb[scored.clamp(min=0)]  # (batch, n_scored, dim)
            kl = distill_kl(q_emb, p_emb_per_query, batch["scored_values"], mask=scored >= 0,
                            temperature=t, lm_temperature=self.hparams.lm_temperature)
            loss = loss + self.hparams.kl_weight * kl
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.hparams.grad_cache_chunk:
            loss = self._grad_cached_step(batch)
        else:
            loss, _, _ = self._loss(batch, gather=self.hparams.gather_negatives)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["queries"]))
        return loss

    def _grad_cached_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """One optimiser step with gradient caching (manual optimisation)."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        optimizer.zero_grad()
        loss, _ = grad_cached_backward(
            [self.model.embed_queries, self.model.embed_prompts], self._tokens(batch),
            lambda q_emb, p_emb: self._objective(batch, q_emb, p_emb, gather=False),
            self.hparams.grad_cache_chunk,
            backward=lambda emb, grad: self.manual_backward(emb, gradient=grad))
        optimizer.step()
        scheduler.step()
        return loss

    def on_train_batch_start(self, batch: dict[str, Any], batch_idx: int) -> None:
        torch.manual_seed(step_seed(self.hparams.seed, self.current_epoch, batch_idx,
                                    self.global_rank))

    def on_fit_start(self) -> None:
        if self.hparams.grad_cache_chunk and self.trainer.world_size > 1:
            raise ValueError(
                f"model.grad_cache_chunk={self.hparams.grad_cache_chunk} runs on one device "
                f"(this run has {self.trainer.world_size}); set it to 0 or train on one device.")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, q_emb, p_emb = self._loss(batch)
        top1 = ((q_emb @ p_emb.T).argmax(dim=-1) == batch["positive_idx"]).float().mean()
        n = len(batch["queries"])
        self.log("val/loss", loss, prog_bar=True, batch_size=n)
        self.log("val/batch_top1", top1, batch_size=n)
        scored = batch["scored_idx"]  # (batch, n_scored)
        if scored.shape[1]:
            retriever_scores = torch.einsum(
                "bd,bnd->bn", q_emb, p_emb[scored.clamp(min=0)])  # (batch, n_scored)
            per_query = ranking_metrics(retriever_scores.detach().float().cpu(),
                                        batch["scored_lm"].cpu(), (scored >= 0).cpu())
            for name, values in per_query.items():
                self._val_rank[name].append(values)

    def on_validation_epoch_end(self) -> None:
        epoch = self.current_epoch if self._pending_validation is None else self._pending_validation
        if self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            self._validated_epoch = epoch
        if not self._val_rank:
            return
        values = {name: torch.cat(parts) for name, parts in self._val_rank.items()}
        self._val_rank = defaultdict(list)
        means = {name: float(v[~v.isnan()].mean()) if (~v.isnan()).any() else math.nan
                 for name, v in values.items()}
        for name, mean in means.items():
            self.log(f"val/{name}", mean, prog_bar=name == SELECT_METRIC)
        if self.trainer.sanity_checking:
            return
        reference = self.trainer.state.fn == TrainerFn.VALIDATING
        record = {"stage": "reference" if reference else "fit", "epoch": epoch,
                  "global_step": self.global_step,
                  "n_queries": int((~values[SELECT_METRIC].isnan()).sum()), **means}
        self.ranking_history.append(record)
        best = self.best_ranking[SELECT_METRIC] if self.best_ranking else -math.inf
        competes = not reference or self.hparams.keep_start_if_best
        if competes and self.hparams.select_best and means[SELECT_METRIC] > best:
            self.best_ranking = record
            self._best_state = {k: v.detach().to("cpu", copy=True)
                                for k, v in self.model.state_dict().items()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[SELECTION_KEY] = {"ranking_history": self.ranking_history,
                                     "best_ranking": self.best_ranking,
                                     "best_state": self._best_state,
                                     "pending_validation": self._validation_due()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(SELECTION_KEY)
        if saved is not None:
            self.ranking_history = list(saved["ranking_history"])
            self.best_ranking, self._best_state = saved["best_ranking"], saved["best_state"]
            self._pending_validation = saved.get("pending_validation")

    def _validation_due(self) -> int | None:
        """The epoch whose end-of-epoch validation is still to run when a checkpoint is written
        after its last training batch (`every_n_train_steps`), else None."""
        trainer = self.trainer
        every = trainer.check_val_every_n_epoch
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if (trainer.training and last and trainer.enable_validation
                and self._validated_epoch != self.current_epoch
                and (every is None or (self.current_epoch + 1) % every == 0)):
            return self.current_epoch
        return None

    def on_train_start(self) -> None:
        """Resumed from a checkpoint written after an epoch's last batch but before its
        validation: Lightning counts that epoch as done and would skip the validation, so
        `select_best` would miss it. Run it now, on the checkpoint's (that epoch's) weights."""
        if self._pending_validation is None:
            return
        trainer = self.trainer
        trainer.validating = True
        try:
            trainer.fit_loop.epoch_loop.val_loop.run()
        finally:
            trainer.training = True
            self._pending_validation = None

    def restore_best(self) -> dict[str, Any] | None:
        """Loads the best validated weights (a fit epoch's, or the starting ones when the
        reference won) into the model; returns their record."""
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        return self.best_ranking

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


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int = 0) -> int:
    """The torch seed of one training batch: a hash of its position, not of the run's history."""
    return random.Random(f"{seed}:dropout:{epoch}:{batch_idx}:{rank}").getrandbits(63)
