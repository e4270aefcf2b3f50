"""`python ddp_train_worker.py RANK WORLD BASE_MODEL OUT`: one rank of a Lightning DDP step.

Each rank holds its own two queries (`RANK_ITEMS[rank]`: one "as good" scored candidate per
rank so the ignore mask matters; the ranks share a prompt, "b"; and a rank-1 query values a
prompt only rank 0 holds, "d", as high as its positive, so only the gathered keys can hide
another rank's copy and another rank's as-good prompt) and runs one `Trainer.fit` step
of `RetrieverModule` on CPU with the gloo backend, in float64, in-batch negatives gathered
across ranks (`gather_negatives`, the default). `train_step` is also what the test runs on one
process with both ranks' queries in one batch. Saves the gradients DDP averaged (just before
the optimiser step) and the weights after it to OUT. `GradsBeforeStep`, the callback that
records those gradients, is also the gradient-caching tests' probe.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
import torch

from retriever.data import collate_examples
from retriever.model import BiEncoder, BiEncoderConfig
from retriever.module import RetrieverModule


def _item(query: str, ids: list[str], texts: list[str], values: list[float]) -> dict[str, Any]:
    return {"query": query, "prompt_ids": ids, "prompt_texts": texts, "scored_ids": ids,
            "scored_texts": texts, "scored_lm": [2 ** v for v in values],
            "scored_values": values}


RANK_ITEMS = [
    [_item("the cat sat on the mat", ["a", "b", "c"],
           ["a wonderful film. positive", "the dog barked", "radio or phone"], [-0.1, -2.3, -0.1]),
     _item("which came last? radio, phone", ["d", "b", "e"],
           ["phone came last", "the dog barked", "field look stand"], [-0.2, -1.2, -2.3])],
    [{**_item("a dog in the field", ["f", "g", "b"],
              ["the quick brown fox", "cat", "the dog barked"], [-0.3, -1.0, -2.0]),
      "values": {"f": -0.3, "g": -1.0, "b": -2.0, "d": -0.3}},
     _item("fox field look", ["i", "j", "g"],
           ["field look stand up", "premise answer", "cat"], [-0.5, -0.5, -3.0])],
]


class GradsBeforeStep(L.Callback):
    """The parameter gradients the optimiser is about to apply (after DDP's all-reduce)."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.model.named_parameters()
                      if p.grad is not None}


def train_step(base_model: str, items: list[dict[str, Any]], devices: int) -> dict[str, Any]:
    """One real Trainer step on `items`; returns the applied gradients and the new weights."""
    from lightning.pytorch.strategies import DDPStrategy

    torch.manual_seed(0)
    config = BiEncoderConfig(base_model=base_model, query_max_length=32, prompt_max_length=48)
    module = RetrieverModule(BiEncoder(config), lr=1e-3)
    grads = GradsBeforeStep()
    strategy = DDPStrategy(process_group_backend="gloo") if devices > 1 else "auto"
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=devices, strategy=strategy,
                        precision="64-true", use_distributed_sampler=False, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[grads])
    batches = torch.utils.data.DataLoader([collate_examples(items)], batch_size=None)
    trainer.fit(module, train_dataloaders=batches)
    return {"steps": trainer.global_step, "world": trainer.world_size, "grads": grads.grads,
            "weights": {n: p.detach().clone() for n, p in module.model.named_parameters()}}


def main() -> None:
    rank, world, base_model, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    # the test launches the ranks itself (LOCAL_RANK, MASTER_ADDR/PORT in the environment):
    # Lightning sees an externally launched job and only joins the gloo group
    torch.save(train_step(base_model, RANK_ITEMS[rank], devices=world), out)


if __name__ == "__main__":
    main()
