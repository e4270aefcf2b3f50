"""One prepared GPU check: matmul peak, scoring, bi-encoder training and FAISS, in one run.

    .venv/bin/python bench/gpu_check.py                  # on a CUDA machine, <= 8 min of wall time
    .venv/bin/python bench/gpu_check.py --smoke --out /tmp/gpu_check.json   # tiny shapes, CPU

Sections, each on a slice of one global deadline (`--budget-s`, default 400 s, so that imports
and a step that cannot be interrupted still end inside 8 minutes); a section whose slice runs
out stops after its current unit of work (a chunk of pairs, an optimizer step, an index) and
records why under "cut":
1. the measured matmul peak (bench/scoring.py `matmul_peak`) in fp32 and the fast dtype
   (`resolve_dtype("auto")`: bf16 on GPUs);
2. scoring: the plain scorer (bench/scoring.py `plain_losses`) and our engine
   (`continuation_losses` with prompt groups) on the same pairs, in the fast dtype, with a
   GPT-Neo-2.7B-shaped model of random weights (the embedded SmolLM2's tokenizer; its first use
   on a machine converts the embedded LM once, ~15-45 s), each method at the batch size found by
   doubling until a run peaks above half of `MEM_FRACTION` of the free memory (or OOM, or
   `batch_cap`); pairs/s, tokens/s, FLOPs (bench/scoring.py `flops`) against the peak, peak
   memory (`torch.cuda.max_memory_allocated`, weights included); max |loss diff| of bf16 vs
   fp32 and engine vs plain on a small sample. Pairs: real candidate pairs from the offline
   mirror (`flan_data.resolve_data_dir(None)`: $UPRISE_DATA_DIR or ../shared/data) as
   bench/scoring.py `build_pairs` makes them, else synthetic word salad of the same shape (the
   JSON says which). Pairs run in prompt order; the plain scorer gets pre-tokenized items, the
   engine tokenizes inside its timer;
3. bi-encoder training steps (AdamW, after one warm-up step; bf16 autocast on GPU, like
   `precision: bf16-mixed`) with BERT-base-shaped random towers and the MiniLM tokenizer,
   plain and gradient-cached (`retriever.grad_cache`): queries/s, FLOPs (~6 x non-embedding
   params x real tokens plain, ~8 x with grad cache: one extra forward), peak memory; and an
   eval-mode fp32 check that both give the same loss and gradients;
4. FAISS Flat and IVF (trained on 39 vectors per list) build + search on clustered synthetic
   unit vectors, CPU and, with faiss-gpu, GPU in the same run; recall@3 against Flat.
Targets (printed and recorded, never asserted): engine >= 50% of the measured fast-dtype matmul
peak, and >= 2x the plain scorer's pairs/s in the same dtype. `--smoke` runs the same code with
tiny shapes (well under a minute on a 2-core CPU). Writes JSON to --out. Timings on a shared
machine are noisy.

Files (bench/ is not a package; they import each other, and bench/scoring.py, through sys.path):
this driver (arguments, the deadline, the setup record, targets, the printed table);
bench/gpu_common.py (`Sizes`, `Clock`, device helpers, the batch-size probe); bench/gpu_pairs.py
(the scoring pairs); one module per section: bench/gpu_scoring.py, bench/gpu_training.py,
bench/gpu_faiss.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import platform
import sys
import time
from pathlib import Path

import torch
import transformers

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from gpu_common import (  # noqa: E402  (bench/, put on sys.path above)
    FULL,
    SMOKE,
    Clock,
    Sizes,
    dtype_name,
    is_cuda,
    release,
)
from gpu_faiss import bench_faiss  # noqa: E402
from gpu_pairs import load_pairs  # noqa: E402
from gpu_scoring import bench_scoring, lm_tokenizer  # noqa: E402
from gpu_training import bench_biencoder  # noqa: E402
from scoring import matmul_peak  # noqa: E402

from flan_data import write_json  # noqa: E402
from proxy_lm import resolve_dtype  # noqa: E402
from proxy_lm.loading import cpu_name  # noqa: E402

SECTIONS = (("scoring", 0.5), ("biencoder", 0.2), ("faiss", 0.3))  # shares of the time left
TARGETS = {"engine_fraction_of_matmul_peak": 0.5, "engine_over_plain_same_dtype": 2.0}


def setup(args, sizes: Sizes, fast: torch.dtype) -> dict:
    import faiss

    device_name = torch.cuda.get_device_name(args.device) if is_cuda(args.device) else cpu_name()
    return {"mode": "smoke" if args.smoke else "full", "device": args.device,
            "device_name": device_name, "cpu": cpu_name(),
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "faiss": faiss.__version__, "threads": torch.get_num_threads(),
            "fast_dtype": dtype_name(fast), "budget_s": args.budget_s, "seed": args.seed,
            "sizes": dataclasses.asdict(sizes)}


def targets(scoring: dict) -> dict:
    engine = scoring.get("methods", {}).get("engine")
    values = {"engine_fraction_of_matmul_peak": engine and engine["fraction_of_matmul_peak"],
              "engine_over_plain_same_dtype": engine and scoring["engine_over_plain"]}
    return {k: {"value": v, "target": TARGETS[k], "pass": None if v is None else v >= TARGETS[k]}
            for k, v in values.items()}


def run(args) -> dict:
    start, clock = time.monotonic(), Clock(args.budget_s)
    sizes, fast = SMOKE if args.smoke else FULL, resolve_dtype("auto", args.device)
    dtypes = dict.fromkeys([torch.float32, fast])
    peaks = {dtype_name(d): matmul_peak(args.device, d, n=sizes.matmul_n) for d in dtypes}
    tok = lm_tokenizer()
    pairs = load_pairs(sizes, args.seed, tok, args.synthetic_pairs)
    result = {"setup": setup(args, sizes, fast), "matmul_peak_flops_per_s": peaks}
    sections = {
        "scoring": lambda c: bench_scoring(pairs, tok, sizes, args.device, fast,
                                           peaks[dtype_name(fast)], c),
        "biencoder": lambda c: bench_biencoder(pairs, sizes, args.device, fast, peaks, c),
        "faiss": lambda c: bench_faiss(sizes, args.device, c),
    }
    for i, (name, share) in enumerate(SECTIONS):
        section_clock = clock.slice(share / sum(s for _, s in SECTIONS[i:]))
        t = time.monotonic()
        print(f"{name}: {max(0.0, section_clock.left()):.0f}s budget", flush=True)
        result[name] = sections[name](section_clock)
        result[name]["seconds"] = time.monotonic() - t
        gc.collect()  # the section's models went with its frame
        release(args.device)
    result["targets"] = targets(result["scoring"])
    result["wall_s"] = time.monotonic() - start
    return result


def si(x: float | None) -> str:
    if x is None:
        return "-"
    scale = {"T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3, "": 1.0}
    unit = next(u for u, f in scale.items() if abs(x) >= f or not u)
    return f"{x / scale[unit]:.1f}{unit}"


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f}"


def print_scoring(sc: dict) -> None:
    print(f"scoring: {sc['model']} random, {sc['dtype']}, {sc['n_pairs']} pairs "
          f"({sc['pairs_source']})")
    print(f"{'method':<8}{'batch':>6}{'pairs':>7}{'pairs/s':>9}{'tok/s':>9}{'FLOP/s':>9}"
          f"{'%peak':>7}{'GiB':>6}")
    for name, m in sc["methods"].items():
        print(f"{name:<8}{m['batch_size']:>6}{m['pairs']:>7}{m['pairs_per_s']:>9.1f}"
              f"{si(m['tokens_per_s']):>9}{si(m['achieved_flops_per_s']):>9}"
              f"{100 * m['fraction_of_matmul_peak']:>7.1f}{gib(m['peak_memory_bytes']):>6}")
    diff = sc["precision"]["max_abs_loss_diff"]
    print("max |loss diff|:", {k: f"{v:.1e}" for k, v in diff.items()})


def print_biencoder(be: dict) -> None:
    gc = be["grad_cache_check"]
    print(f"bi-encoder: {be['precision']}, {si(be['params_per_tower'])} params/tower; grad cache "
          f"vs plain: |loss diff| {gc['loss_abs_diff']:.1e}, max |grad diff| "
          f"{gc['max_abs_grad_diff']:.1e}")
    print(f"{'setting':<26}{'q/s':>8}{'tok/s':>9}{'FLOP/s':>9}{'%peak':>7}{'GiB':>6}")
    for name, t in be["settings"].items():
        if "oom" in t:
            print(f"{name:<26}  out of memory")
            continue
        print(f"{name:<26}{t['queries_per_s']:>8.1f}{si(t['tokens_per_s']):>9}"
              f"{si(t['achieved_flops_per_s']):>9}{100 * t['fraction_of_matmul_peak']:>7.1f}"
              f"{gib(t['peak_memory_bytes']):>6}")


def print_faiss(fa: dict) -> None:
    print(f"faiss: {fa['n_vectors']:,} x {fa['dim']}, {fa['n_queries']} queries, k={fa['k']} "
          f"({fa['gpu']})")
    print(f"{'index':<18}{'build s':>8}{'search q/s':>11}{'recall':>8}")
    for name, x in fa["indexes"].items():
        rec = x.get("recall_vs_flat", x.get("recall_vs_cpu_flat"))
        print(f"{name:<18}{x['build_s']:>8.2f}{x['search_qps']:>11.0f}"
              f"{'-' if rec is None else f'{rec:.3f}':>8}")


def print_table(r: dict, out: Path) -> None:
    s = r["setup"]
    print(f"\n{s['device_name']} | torch {s['torch']} | transformers {s['transformers']} | "
          f"faiss {s['faiss']} | {s['cpu']}")
    print("matmul peak FLOP/s:", {k: si(v) for k, v in r["matmul_peak_flops_per_s"].items()})
    print_scoring(r["scoring"])
    print_biencoder(r["biencoder"])
    print_faiss(r["faiss"])
    for name, t in r["targets"].items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        print(f"target {name} >= {t['target']}: "
              f"{'-' if t['value'] is None else round(t['value'], 3)} {verdict}")
    cuts = [f"{k}: {c}" for k, _ in SECTIONS for c in r[k]["cut"]]
    print("cut:", cuts or "nothing", f"| wall {r['wall_s']:.0f}s ->", out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny shapes, same code (seconds, CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget-s", type=float, default=None,
                   help="global deadline in seconds (default 400; smoke 300)")
    p.add_argument("--synthetic-pairs", action="store_true",
                   help="synthetic scoring pairs even when the data mirror exists")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu_check.json"))
    args = p.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()  # save/load bars of the random towers
    args.budget_s = args.budget_s or (300.0 if args.smoke else 400.0)
    result = run(args)
    out = write_json(args.out, result)
    print_table(result, out)


if __name__ == "__main__":
    main()
