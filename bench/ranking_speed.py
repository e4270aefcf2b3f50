"""Speed of the ranking metrics (`retriever.ranking.ranking_metrics`): one batched call against
the plain way, one call per query, on section-sized matrices; the crossed bootstrap makes one
call per ranker and resample, so its wall time is this call's time x rankers x resamples.

    python bench/ranking_speed.py                   # 300 x 20 and 150 x 100, 1 thread
    python bench/ranking_speed.py --shapes 300x20 --repeats 50

Scores are seeded Gaussian with a quarter of the LM's entries missing (NaN, masked), as in a
section whose score cache lacks pairs. Each way is timed `--rounds` times and the fastest round
kept (a burst of foreign load on a shared machine only slows a round); the two ways' values are
checked equal before any timing. Results go to bench/results/ranking_speed.json with the CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flan_data import write_json  # noqa: E402
from proxy_lm.loading import cpu_has_native_bf16, cpu_name  # noqa: E402


def parse_shape(text: str) -> tuple[int, int]:
    try:
        n_q, n_p = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected QUERIESxPROMPTS, e.g. 300x20") from None
    if n_q < 1 or n_p < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both sizes must be >= 1")
    return n_q, n_p


def section(n_q: int, n_p: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    retriever = torch.randn(n_q, n_p, generator=gen, dtype=torch.float64)  # (n_q, n_p)
    lm = torch.randn(n_q, n_p, generator=gen, dtype=torch.float64)  # (n_q, n_p)
    mask = torch.rand(n_q, n_p, generator=gen) > 0.25  # (n_q, n_p)
    return retriever, lm.masked_fill(~mask, float("nan")), mask


def per_query(retriever, lm, mask) -> dict:
    """The plain way: the same function on one query at a time."""
    import torch

    from retriever.ranking import ranking_metrics

    rows = [ranking_metrics(retriever[i:i + 1], lm[i:i + 1], mask[i:i + 1])
            for i in range(lm.shape[0])]
    return {name: torch.cat([row[name] for row in rows]) for name in rows[0]}


def fastest_ms(fn, inputs: tuple, repeats: int, rounds: int) -> float:
    """Milliseconds per `fn(*inputs)` call, in the fastest of `rounds` rounds of `repeats`."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn(*inputs)
        best = min(best, (time.perf_counter() - start) / repeats * 1000)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=[(300, 20), (150, 100)])
    parser.add_argument("--repeats", type=int, default=20, help="calls per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/ranking_speed.json"))
    args = parser.parse_args(argv)

    import torch

    from retriever.ranking import ranking_metrics

    torch.set_num_threads(args.threads)
    rows = []
    for n_q, n_p in args.shapes:
        inputs = section(n_q, n_p, args.seed)
        batched, plain = ranking_metrics(*inputs), per_query(*inputs)
        for name in batched:  # the same numbers, NaN where undefined
            if not torch.allclose(batched[name], plain[name], atol=1e-12, equal_nan=True):
                raise SystemExit(f"{name} differs between the batched and per-query calls")
        batched_ms = fastest_ms(ranking_metrics, inputs, args.repeats, args.rounds)
        plain_ms = fastest_ms(per_query, inputs, max(1, args.repeats // 10), args.rounds)
        rows.append({"queries": n_q, "prompts": n_p, "batched_ms": round(batched_ms, 3),
                     "per_query_ms": round(plain_ms, 3),
                     "speedup": round(plain_ms / batched_ms, 1)})

    print(f"ranking_metrics, {args.threads} thread(s), {cpu_name()}")
    print("| section | batched ms | per-query ms | speed-up |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['queries']} x {row['prompts']} | {row['batched_ms']:.2f} | "
              f"{row['per_query_ms']:.1f} | {row['speedup']:.1f}x |")
    write_json(args.out, {"setup": {k: str(v) for k, v in vars(args).items()}, "cpu": cpu_name(),
                          "cpu_native_bf16": cpu_has_native_bf16(), "rows": rows})


if __name__ == "__main__":
    main()
