"""Section 3 of the GPU check (bench/gpu_check.py): bi-encoder training steps with random
BERT-shaped towers and the MiniLM tokenizer, plain and gradient-cached (`retriever.grad_cache`),
AdamW after one warm-up step, bf16 autocast on GPU: queries/s, tokens/s, FLOPs against the
matmul peak, peak memory, and an eval-mode fp32 check that both give the same loss and
gradients. `bench_biencoder` returns the section's JSON.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch
import transformers
from gpu_common import Clock, Sizes, dtype_name, peak_bytes, release, reset_peak
from gpu_pairs import Pairs
from scoring import timed

from retriever.grad_cache import grad_cached_backward
from retriever.losses import info_nce
from retriever.model import BiEncoder, BiEncoderConfig, resolve_encoder_path

TEMPERATURE = 0.05  # InfoNCE
MINILM = "embedded:all-MiniLM-L6-v2"  # the tokenizer of the random BERT towers


def random_bert(shape: dict, folder: Path) -> str:
    """Saves a random-init BERT of `shape` with the embedded MiniLM's tokenizer to `folder`."""
    tok = transformers.AutoTokenizer.from_pretrained(resolve_encoder_path(MINILM))
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(tok), max_position_embeddings=512, **shape)
    transformers.BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def train_batch(model: BiEncoder, pairs: Pairs, n_q: int, per_q: int, device: str) -> dict:
    """`n_q` queries, `per_q` prompts each (its positive first, then hard negatives)."""
    qs, ps = list(dict.fromkeys(pairs.queries)), list(dict.fromkeys(pairs.prompts))
    queries = [qs[i % len(qs)] for i in range(n_q)]
    prompts = [ps[k % len(ps)] for k in range(n_q * per_q)]  # (n_q * per_q,)
    move = lambda tok: {k: v.to(device) for k, v in tok.items()}  # noqa: E731
    return {"q": move(model.tokenize_queries(queries)), "p": move(model.tokenize_prompts(prompts)),
            "positives": torch.arange(n_q, device=device) * per_q}  # (n_q,)


def backward(model: BiEncoder, batch: dict, chunk: int | None, amp: torch.dtype | None):
    """Plain (`chunk` None) or gradient-cached backward of InfoNCE; returns the loss."""
    def autocast(embed):
        def run(tokens):
            with torch.autocast(batch["q"]["input_ids"].device.type, amp, enabled=amp is not None):
                return embed(tokens)
        return run

    embedders = [autocast(model.embed_queries), autocast(model.embed_prompts)]
    loss_fn = lambda q_emb, p_emb: info_nce(q_emb.float(), p_emb.float(),  # noqa: E731
                                            batch["positives"], temperature=TEMPERATURE)
    if chunk is not None:
        return grad_cached_backward(embedders, [batch["q"], batch["p"]], loss_fn, chunk)[0]
    loss = loss_fn(embedders[0](batch["q"]), embedders[1](batch["p"]))
    loss.backward()
    return loss.detach()


def grad_cache_check(model: BiEncoder, batch: dict, chunk: int) -> dict:
    """Eval mode (no dropout), fp32: the grad-cached loss and gradients equal the plain ones."""
    model.eval()
    grads = []
    losses = []
    for c in (None, chunk):
        model.zero_grad(set_to_none=True)
        losses.append(float(backward(model, batch, c, None)))
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    model.train()
    diff = max(float((a - b).abs().max()) for a, b in zip(*grads, strict=True))
    return {"chunk": chunk, "loss_plain": losses[0], "loss_grad_cache": losses[1],
            "loss_abs_diff": abs(losses[0] - losses[1]), "max_abs_grad_diff": diff,
            "max_abs_grad": max(float(g.abs().max()) for g in grads[0])}


def tower_params(tower) -> int:
    """Parameters whose matmuls run per token (not the embedding tables, not the pooler)."""
    return sum(p.numel() for n, p in tower.named_parameters()
               if not n.startswith(("embeddings.", "pooler.")))


def step_flops(model: BiEncoder, batch: dict, chunk: int | None) -> float:
    per_token = 8 if chunk is not None else 6  # fwd 2 + bwd 4 (+ the grad cache's re-forward)
    return per_token * (tower_params(model.query_encoder) * int(batch["q"]["attention_mask"].sum())
                        + tower_params(model.prompt_encoder)
                        * int(batch["p"]["attention_mask"].sum()))


def time_training(model, opt, batch: dict, chunk: int | None, amp, sizes: Sizes, clock: Clock,
                  device: str) -> dict:
    """One warm-up step, then up to `max_steps` timed AdamW steps (at least one)."""
    def step():
        opt.zero_grad(set_to_none=True)
        loss = backward(model, batch, chunk, amp)
        opt.step()
        return float(loss)

    reset_peak(device)
    try:
        step()
        steps, seconds, loss = 0, 0.0, math.nan
        while steps < sizes.max_steps and (steps == 0 or clock.left() > 0):
            loss, s = timed(step, device)
            steps, seconds = steps + 1, seconds + s
    except torch.cuda.OutOfMemoryError:
        opt.zero_grad(set_to_none=True)
        release(device)
        return {"oom": True}
    n_q = len(batch["positives"])
    return {"steps": steps, "seconds": seconds, "queries_per_s": n_q * steps / seconds,
            "flops_per_token_per_param": 8 if chunk is not None else 6,
            "tokens_per_s": sum(int(batch[k]["attention_mask"].sum()) for k in "qp")
            * steps / seconds, "model_flops_per_step": step_flops(model, batch, chunk),
            "achieved_flops_per_s": step_flops(model, batch, chunk) * steps / seconds,
            "peak_memory_bytes": peak_bytes(device), "last_loss": loss}


def bench_biencoder(pairs: Pairs, sizes: Sizes, device: str, fast: torch.dtype,
                    peaks: dict, clock: Clock) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model = BiEncoder(BiEncoderConfig(base_model=random_bert(sizes.bert, Path(tmp))))
    model.to(device)
    amp = fast if fast != torch.float32 else None
    peak = peaks[dtype_name(amp or torch.float32)]
    n_q, per_q = sizes.train_batches[0]
    check = grad_cache_check(model, train_batch(model, pairs, n_q, per_q, device),
                             max(1, n_q // 2))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    settings = [(n_q, per_q, c) for n_q, per_q in sizes.train_batches for c in (None, sizes.chunk)]
    out = {"shape": sizes.bert, "precision": f"{dtype_name(amp)}-autocast" if amp else "float32",
           "params_per_tower": tower_params(model.query_encoder), "grad_cache_check": check,
           "settings": {}, "cut": []}
    for i, (n_q, per_q, chunk) in enumerate(settings):
        name = f"{'grad_cache' if chunk else 'plain'}-{n_q}x{per_q}" + (f"-chunk{chunk}"
                                                                         if chunk else "")
        if clock.left() <= 0:
            out["cut"].append(f"{name} skipped: out of time")
            continue
        batch = train_batch(model, pairs, n_q, per_q, device)
        row = time_training(model, opt, batch, chunk, amp, sizes,
                            clock.slice(1 / (len(settings) - i)), device)
        if "oom" not in row:
            row["fraction_of_matmul_peak"] = row["achieved_flops_per_s"] / peak
        out["settings"][name] = row
    return out
