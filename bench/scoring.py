"""Benchmark: plain per-(pair, option) scoring vs the prompt-grouped prefix-shared engine.

    .venv/bin/python bench/scoring.py --n-queries 60            # SmolLM2 on CPU, ~600 pairs
    .venv/bin/python bench/scoring.py --model gpt-neo-2.7b --device cuda --n-queries 400

Same pairs, one process: (a) plain fp32 -- every (pair, option) one full right-padded sequence,
batched in input order, logits at every position (the reference UPRISE scorer); (b) plain in
the engine's dtype; (c) our engine (`continuation_losses` with prompt groups) in fp32 and in
the fast dtype; (d) the engine without prompt groups (sharing only within each pair's options),
which isolates the gain of grouping by prompt. The fast dtype is `resolve_dtype("auto")`:
bf16 on GPUs and on CPUs with native bf16 (AVX-512 BF16 / AMX), else fp32, where (b)-(c) repeat
(a) and run once. Reports pairs/s, tokens/s, achieved FLOP/s against a measured matmul peak,
score differences, and whether the retriever's labels (`build_training_examples`) change.
Writes JSON to --out. Nothing here is asserted; numbers on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import build_stage_data, join_context, resolve_data_dir, tasks_in, write_json  # noqa: E402
from proxy_lm import continuation_losses, load_lm, resolve_dtype, score_record  # noqa: E402
from proxy_lm.likelihood import tokenize  # noqa: E402
from proxy_lm.loading import LanguageModel, cpu_has_native_bf16, cpu_name  # noqa: E402
from proxy_lm.shared_prefix import plan, stage_tokens  # noqa: E402
from retriever.labels import build_training_examples  # noqa: E402

GPT_NEO = {  # shapes of the public checkpoints; built with random weights (no Hub here)
    "gpt-neo-125m": dict(hidden_size=768, num_layers=12, num_heads=12),
    "gpt-neo-1.3b": dict(hidden_size=2048, num_layers=24, num_heads=16),
    "gpt-neo-2.7b": dict(hidden_size=2560, num_layers=32, num_heads=20),
}
BF16_TOLERANCE = 0.5
"""Documented |mean-NLL difference| bound for bf16 vs fp32 (nats/token): bf16 keeps 8 mantissa
bits, so every layer adds ~0.4% relative error; through 30 layers single options move by up to
~0.5 nats (plain bf16 as much as the engine). Whether labels change is the check that matters."""


def build_pairs(args) -> tuple[list, list, list, list]:
    """(queries, contexts, continuations, prompt ids) of real candidate pairs."""
    clusters = args.clusters.split(",")
    n_tasks = sum(len(tasks_in(c)) for c in clusters)
    per_task = max(1, math.ceil(args.n_queries / n_tasks))
    stage = build_stage_data(args.held_out, resolve_data_dir(None), clusters, args.seed,
                             pool_per_task=args.pool_per_task or max(per_task,
                                                                     args.n_candidates + 1),
                             queries_per_task=per_task, n_candidates=args.n_candidates,
                             eval_per_task=1, max_prompt_chars=args.max_prompt_chars)
    queries = {q.id: q for q in stage.train_queries}
    prompts = {p.id: p for p in stage.pool}
    rows = [(queries[c.query_id], prompts[p]) for c in stage.candidates[: args.n_queries]
            for p in c.prompt_ids]
    return ([q for q, _ in rows], [join_context([p.text], q.input) for q, p in rows],
            [q.continuations() for q, _ in rows], [p.id for _, p in rows])


def gpt_neo_config(shape: dict, vocab_size: int, **extra):
    """A GPT-Neo config of `shape` (a `GPT_NEO` value): 2,048 positions, alternating global and
    local (window 256) attention layers, as the public checkpoints."""
    from transformers import GPTNeoConfig

    return GPTNeoConfig(vocab_size=vocab_size, max_position_embeddings=2048, window_size=256,
                        attention_types=[[["global", "local"], shape["num_layers"] // 2]],
                        **shape, **extra)


def load_model(args, dtype: str) -> LanguageModel:
    if args.model is None:
        return load_lm(args.lm, dtype=dtype, device=args.device)
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    tok = load_lm(args.lm, dtype="float32").tokenizer  # any BPE tokenizer: shapes only matter
    shape = GPT_NEO.get(args.model)
    cfg = (gpt_neo_config(shape, len(tok)) if shape
           else GPTNeoConfig.from_pretrained(args.model, vocab_size=len(tok)))
    torch.manual_seed(0)
    model = GPTNeoForCausalLM(cfg).to(args.device, resolve_dtype(dtype, args.device)).eval()
    model.requires_grad_(False)
    return LanguageModel(model=model, tokenizer=tok, name=args.model, max_length=2048)


def plain_losses(lm: LanguageModel, items: list, batch_size: int) -> tuple[list, dict]:
    """Every (context, option) a whole right-padded sequence, full logits, input order."""
    rows = [(i, j) for i, it in enumerate(items) for j in range(len(it.options))]
    out = [[0.0] * len(it.options) for it in items]
    real = padded = 0
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        seqs = [items[i].context + items[i].options[j] for i, j in chunk]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), lm.tokenizer.pad_token_id)  # (rows, width)
        mask = torch.zeros_like(ids)
        for k, seq in enumerate(seqs):
            ids[k, : len(seq)], mask[k, : len(seq)] = torch.tensor(seq), 1
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        with torch.inference_mode():
            logits = lm.model(input_ids=ids, attention_mask=mask).logits  # (rows, width, vocab)
        logp = F.log_softmax(logits.float(), dim=-1)
        for k, (i, j) in enumerate(chunk):
            ctx, opt = len(items[i].context), items[i].options[j]
            tgt = torch.tensor(opt, device=lm.device)[:, None]  # (n_opt, 1)
            out[i][j] = -logp[k, ctx - 1 : ctx - 1 + len(opt)].gather(-1, tgt).mean().item()
        real += int(mask.sum())
        padded += ids.numel()
    return out, {"real_tokens": real, "padded_tokens": padded, "logit_positions": padded}


def engine_losses(lm, contexts, continuations, groups, batch_size) -> tuple[list, dict]:
    """Our engine; `groups=None` shares only within a (context, options) item, not by prompt."""
    losses = continuation_losses(lm, contexts, continuations, batch_size=batch_size,
                                 groups=groups)
    return losses, engine_work(lm, contexts, continuations, groups, batch_size)


def engine_work(lm, contexts, continuations, groups, batch_size) -> dict:
    """The tokens the engine runs (its plan, counted without running it) and its logit
    positions: one column per context (every option's first token), then the option tokens."""
    items = tokenize(lm, contexts, continuations)
    work = stage_tokens(items, plan(items, groups, batch_size), batch_size)
    logit_positions = len(items) + sum(len(o) - 1 for it in items for o in it.options)
    return {"real_tokens": work["total"], "stage_tokens": work,
            "logit_positions": logit_positions}


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(reps + 1):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def flops(lm: LanguageModel, work: dict) -> float:
    """2 x non-embedding params per token processed + 2 x d x vocab per logit position."""
    emb = lm.model.get_input_embeddings().weight
    body = sum(p.numel() for p in lm.model.parameters()) - emb.numel()
    body -= sum(p.numel() for n, p in lm.model.named_parameters() if "wpe" in n)
    return 2 * body * work["real_tokens"] + 2 * emb.numel() * work["logit_positions"]


def timed(fn, device: str):
    _sync(device)
    t = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - t


def labels(queries, groups, losses, lm_name: str, n_neg: int) -> dict:
    scores = [score_record(q, p, lm_name, row) for q, p, row in zip(queries, groups, losses,
                                                                     strict=True)]
    return {e.query_id: (e.positive_id, frozenset(e.negative_ids))  # negatives: a set
            for e in build_training_examples(scores, n_neg)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-queries", type=int, default=60)
    p.add_argument("--n-candidates", type=int, default=10)
    p.add_argument("--pool-per-task", type=int, default=None,
                   help="default max(queries per task, n_candidates + 1): each prompt then "
                        "serves up to ~n_candidates queries, the ratio of flan_data's defaults "
                        "(200 queries x 50 candidates / 1000 prompts per task = 10)")
    p.add_argument("--clusters", default="sentiment,nli,paraphrase,commonsense")
    p.add_argument("--held-out", default="closed_book_qa")
    p.add_argument("--max-prompt-chars", type=int, default=600)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--lm", default="embedded:smollm2-135m-instruct")
    p.add_argument("--model", default=None, help=f"GPT-Neo {sorted(GPT_NEO)} or config path, "
                                                 "random weights (throughput runs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--n-hard-negatives", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads; on a shared machine use the number of idle cores "
                        "(OpenMP threads waiting for a busy core make CPU runs ~30x slower)")
    p.add_argument("--skip-plain-fp32", action="store_true", help="for big models on GPU")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "scoring.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args)


def run(args) -> None:
    queries, contexts, continuations, groups = build_pairs(args)
    fast = resolve_dtype("auto", args.device)
    fast_name = str(fast).removeprefix("torch.")
    lms = {"float32": load_model(args, "float32"), fast_name: load_model(args, fast_name)}
    items = tokenize(lms["float32"], contexts, continuations)
    warm = slice(0, min(8, len(contexts)))
    methods = {}
    runs = [("engine", "float32"), ("engine", fast_name), ("engine-ungrouped", fast_name),
            ("plain", fast_name)]
    runs += [] if args.skip_plain_fp32 else [("plain", "float32")]
    for kind, dtype in dict.fromkeys(runs):  # without a fast dtype (fp32 CPUs) runs repeat
        lm = lms[dtype]
        if kind == "plain":
            fn = lambda lm=lm, sub=items: plain_losses(lm, sub, args.batch_size)  # noqa: E731
            plain_losses(lm, items[warm], args.batch_size)
        else:
            by = groups if kind == "engine" else None  # ungrouped: no prompt sharing
            fn = lambda lm=lm, by=by: engine_losses(lm, contexts, continuations,  # noqa: E731
                                                    by, args.batch_size)
            engine_losses(lm, contexts[warm], continuations[warm], by and by[warm],
                          args.batch_size)
        (losses, work), seconds = timed(fn, args.device)
        methods[f"{kind}-{dtype}"] = dict(losses=losses, work=work, seconds=seconds, dtype=dtype)
        print(f"{kind}-{dtype}: {seconds:.1f}s", flush=True)
    report(args, lms["float32"], queries, groups, methods, fast, fast_name)


def report(args, lm, queries, groups, methods, fast, fast_name) -> None:
    n = len(queries)
    peaks = {"float32": matmul_peak(args.device, torch.float32),
             fast_name: matmul_peak(args.device, fast)}
    table = {}
    for name, m in methods.items():
        f = flops(lm, m["work"])
        table[name] = {
            "seconds": m["seconds"], "pairs_per_s": n / m["seconds"],
            "tokens_processed": m["work"]["real_tokens"],
            "tokens_per_s": m["work"]["real_tokens"] / m["seconds"],
            "model_flops": f, "achieved_flops_per_s": f / m["seconds"],
            "fraction_of_matmul_peak": f / m["seconds"] / peaks[m["dtype"]],
            **({"stage_tokens": m["work"]["stage_tokens"]} if "stage_tokens" in m["work"] else
               {"padded_tokens": m["work"]["padded_tokens"]}),
        }
    ref = "plain-float32" if "plain-float32" in methods else f"plain-{fast_name}"
    diff = {f"{a}_vs_{b}": max_abs(methods[a]["losses"], methods[b]["losses"])
            for a, b in [("engine-float32", ref), (f"engine-{fast_name}", ref),
                         (f"engine-ungrouped-{fast_name}", ref),
                         (f"plain-{fast_name}", ref), (f"engine-{fast_name}", f"plain-{fast_name}")]
            if a != b}
    want = labels(queries, groups, methods[ref]["losses"], "x", args.n_hard_negatives)
    changed = {name: sum(labels(queries, groups, m["losses"], "x", args.n_hard_negatives).get(q)
                         != v for q, v in want.items()) for name, m in methods.items()}
    speed = lambda a, b: table[a]["pairs_per_s"] / table[b]["pairs_per_s"]  # noqa: E731
    result = {
        "setup": {**{k: v for k, v in vars(args).items()}, "n_pairs": n,
                  "n_prompts": len(set(groups)), "pairs_per_prompt": n / len(set(groups)),
                  "n_params": sum(p.numel() for p in lm.model.parameters()),
                  "torch": torch.__version__, "transformers": transformers.__version__,
                  "threads": torch.get_num_threads(), "fast_dtype": fast_name,
                  "cpu_native_bf16": cpu_has_native_bf16(), "cpu": cpu_name(),
                  "machine": platform.processor() or platform.machine()},
        "matmul_peak_flops_per_s": peaks,
        "methods": table,
        "ratios": {"engine_fast_over_plain_fp32": speed(f"engine-{fast_name}", ref)
                   if ref == "plain-float32" else None,
                   "engine_over_ungrouped": speed(f"engine-{fast_name}",
                                                  f"engine-ungrouped-{fast_name}"),
                   "engine_fast_over_plain_same_dtype": speed(f"engine-{fast_name}",
                                                              f"plain-{fast_name}")},
        "max_abs_loss_diff": diff,
        "fp32_equal_within_1e-3": diff["engine-float32_vs_plain-float32"] < 1e-3
        if ref == "plain-float32" else None,
        "bf16_tolerance": BF16_TOLERANCE,
        "fast_dtype_within_tolerance": all(v <= BF16_TOLERANCE for k, v in diff.items()
                                           if fast_name in k),
        "labels": {"queries_with_labels": len(want), "changed_vs_" + ref: changed},
    }
    out = Path(args.out)
    write_json(out, result)
    print(f"\n{n} pairs, {result['setup']['pairs_per_prompt']:.1f} pairs per prompt, "
          f"peak matmul {', '.join(f'{k} {v / 1e9:.0f} GFLOP/s' for k, v in peaks.items())}")
    print(f"{'method':<16}{'s':>8}{'pairs/s':>9}{'tok/s':>9}{'GFLOP/s':>9}{'%peak':>7}")
    for name, row in table.items():
        print(f"{name:<16}{row['seconds']:>8.1f}{row['pairs_per_s']:>9.2f}"
              f"{row['tokens_per_s']:>9.0f}{row['achieved_flops_per_s'] / 1e9:>9.1f}"
              f"{100 * row['fraction_of_matmul_peak']:>7.1f}")
    print("ratios:", {k: v and round(v, 2) for k, v in result["ratios"].items()})
    print("max |loss diff|:", {k: f"{v:.2e}" for k, v in diff.items()})
    print("labels changed:", changed, f"of {len(want)} queries ->", out)


def max_abs(a: list, b: list) -> float:
    return max((abs(x - y) for ra, rb in zip(a, b, strict=True)
                for x, y in zip(ra, rb, strict=True)), default=0.0)


if __name__ == "__main__":
    main()
