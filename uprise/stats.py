"""Paired bootstrap confidence intervals for metric differences on the same examples."""

from __future__ import annotations

import numpy as np


def paired_bootstrap(
    a: list[float], b: list[float], n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean of `a - b` over paired examples and its percentile bootstrap interval.

    a, b: per-example metric values of two methods on the same examples, in the same order.
    Returns {"diff", "low", "high"}; resampling uses `np.random.default_rng(seed)`.
    """
    if len(a) != len(b) or not a:
        raise ValueError(
            f"paired bootstrap needs two equal, non-empty lists (got {len(a)}, {len(b)})"
        )
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)  # (n,)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_resamples, len(diff)))  # (resamples, n)
    means = diff[idx].mean(axis=1)  # (resamples,)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"diff": float(diff.mean()), "low": float(low), "high": float(high)}
