"""Section 2 of the GPU check (bench/gpu_check.py): the plain scorer (bench/scoring.py
`plain_losses`) and our engine (`continuation_losses` with prompt groups) on the same pairs, with a
GPT-Neo-shaped LM of random weights: each method's batch size probed, then pairs/s, tokens/s,
FLOPs against the matmul peak and peak memory; max |loss diff| of bf16 vs fp32 and engine vs
plain on a small sample. `bench_scoring` returns the section's JSON; `lm_tokenizer` is the
tokenizer the pairs and the LM share.
"""

from __future__ import annotations

from collections import Counter

import torch
import transformers
from gpu_common import SHAPES, Clock, Sizes, dtype_name, peak_bytes, probe_batch, reset_peak
from gpu_pairs import Pairs
from scoring import (
    BF16_TOLERANCE,
    engine_work,
    flops,
    gpt_neo_config,
    max_abs,
    plain_losses,
    timed,
)

from proxy_lm import continuation_losses
from proxy_lm.likelihood import tokenize
from proxy_lm.loading import EMBEDDED_LM, LanguageModel, resolve_lm_path
from proxy_lm.shared_prefix import WINDOW

PRECISION_BATCH = 8  # batch size of the fp32/bf16 loss comparison


def lm_tokenizer():
    """The embedded LM's BPE tokenizer (shapes only matter; GPT-Neo's own is on the Hub)."""
    tok = transformers.AutoTokenizer.from_pretrained(resolve_lm_path(EMBEDDED_LM))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_lm(name: str, tok, device: str) -> LanguageModel:
    """A GPT-Neo of shape `SHAPES[name]`, random weights, built in fp32 on `device`."""
    cfg = gpt_neo_config(SHAPES[name], len(tok), bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.GPTNeoForCausalLM(cfg)
    model.eval().requires_grad_(False)
    return LanguageModel(model=model, tokenizer=tok, name=name, max_length=2048)


def run_engine(lm: LanguageModel, pairs: Pairs, batch: int) -> list:
    return continuation_losses(lm, pairs.contexts, pairs.continuations, batch_size=batch,
                               groups=pairs.groups)


def compare_dtypes(lm: LanguageModel, pairs: Pairs, n_bf16: int) -> dict:
    """Max |loss diff|: engine vs plain in fp32 on `pairs`, bf16 vs fp32 on the first `n_bf16`
    of them (bf16 is slow on most CPUs); the model is left in bf16."""
    losses = {}
    for dtype, n in ((torch.float32, len(pairs)), (torch.bfloat16, min(n_bf16, len(pairs)))):
        lm.model.to(dtype)
        sub = pairs.take(range(n))
        items = tokenize(lm, sub.contexts, sub.continuations)
        losses[f"plain-{dtype_name(dtype)}"] = plain_losses(lm, items, PRECISION_BATCH)[0]
        losses[f"engine-{dtype_name(dtype)}"] = run_engine(lm, sub, PRECISION_BATCH)
    versus = [("engine-float32", "plain-float32"), ("plain-bfloat16", "plain-float32"),
              ("engine-bfloat16", "plain-float32"), ("engine-bfloat16", "plain-bfloat16")]
    n = min(n_bf16, len(pairs))  # pairs scored in both dtypes
    diff = {f"{a}_vs_{b}": max_abs(losses[a][:n], losses[b][:n]) if "bfloat16" in a + b
            else max_abs(losses[a], losses[b]) for a, b in versus}
    return {"n_pairs_float32": len(pairs), "n_pairs_bfloat16": n, "max_abs_loss_diff": diff,
            "fp32_engine_equals_plain_within_1e-4": diff["engine-float32_vs_plain-float32"] < 1e-4,
            "bf16_tolerance": BF16_TOLERANCE,
            "bf16_within_tolerance": all(v <= BF16_TOLERANCE for v in diff.values())}


def run_plain(lm: LanguageModel, items: list, batch: int, clock: Clock) -> tuple[int, dict, float]:
    """`plain_losses` over `items`, `4 * batch` pairs (~8 batches of rows) a call, until done or
    out of time: (pairs done, summed work, seconds)."""
    done, work, seconds = 0, Counter(), 0.0
    while done < len(items) and (done == 0 or clock.left() > 0):
        chunk = items[done : done + 4 * batch]
        (_, w), s = timed(lambda c=chunk: plain_losses(lm, c, batch), str(lm.device))
        done, seconds = done + len(chunk), seconds + s
        work.update(w)
    return done, dict(work), seconds


def rate(lm: LanguageModel, n: int, work: dict, seconds: float, peak: float, batch: int,
         memory: int | None) -> dict:
    f = flops(lm, work)
    return {"batch_size": batch, "pairs": n, "seconds": seconds, "pairs_per_s": n / seconds,
            "tokens_processed": work["real_tokens"], "tokens_per_s": work["real_tokens"] / seconds,
            "model_flops": f, "achieved_flops_per_s": f / seconds,
            "fraction_of_matmul_peak": f / seconds / peak, "peak_memory_bytes": memory}


def probe_scoring(lm: LanguageModel, pairs: Pairs, items: list, sizes: Sizes, clock: Clock,
                  device: str) -> dict:
    """Batch sizes for both methods: plain on its longest rows, the engine on a full window."""
    longest = sorted(items, key=lambda it: -max(len(it.context) + len(o) for o in it.options))
    plain = lambda b: plain_losses(lm, longest[:b], b)  # noqa: E731
    engine = lambda b: run_engine(lm, pairs.take(range(min(len(pairs), WINDOW * b))), b)  # noqa: E731
    return {name: probe_batch(run, sizes.batch_start, sizes.batch_cap, clock.slice(1 / (2 - i)),
                              device)
            for i, (name, run) in enumerate((("plain", plain), ("engine", engine)))}


def bench_scoring(pairs: Pairs, tok, sizes: Sizes, device: str, fast: torch.dtype,
                  peak: float, clock: Clock) -> dict:
    lm = build_lm(sizes.lm, tok, device)
    out = {"pairs_source": pairs.source, "n_pairs": len(pairs), "model": sizes.lm,
           "n_params": sum(p.numel() for p in lm.model.parameters()), "dtype": dtype_name(fast),
           "precision": compare_dtypes(lm, pairs.take(range(min(len(pairs),
                                                                sizes.precision_pairs))),
                                       sizes.bf16_pairs),
           "cut": []}
    lm.model.to(fast)
    items = tokenize(lm, pairs.contexts, pairs.continuations)
    probes = probe_scoring(lm, pairs, items, sizes, clock.slice(0.3), device)
    out["probe"] = {name: log for name, (_, log) in probes.items()}
    (b_plain, _), (b_engine, _) = probes["plain"], probes["engine"]
    reset_peak(device)
    n, work, seconds = run_plain(lm, items, b_plain, clock.slice(0.6))
    plain = rate(lm, n, work, seconds, peak, b_plain, peak_bytes(device))
    if n < len(pairs):
        out["cut"].append(f"plain stopped after {n} of {len(pairs)} pairs; both ran on those")
    done = pairs.take(range(n))
    reset_peak(device)
    _, seconds = timed(lambda: run_engine(lm, done, b_engine), device)
    work = engine_work(lm, done.contexts, done.continuations, done.groups, b_engine)
    engine = rate(lm, n, work, seconds, peak, b_engine, peak_bytes(device))
    out["methods"] = {"plain": plain, "engine": engine}
    out["engine_over_plain"] = engine["pairs_per_s"] / plain["pairs_per_s"]
    return out
