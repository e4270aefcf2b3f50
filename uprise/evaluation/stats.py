"""Paired bootstrap confidence intervals for metric differences on the same examples.

Contract: `paired_bootstrap(a, b)` resamples examples with `np.random.default_rng(seed)` and
returns the mean difference with its percentile interval. With `groups` (one label per
example, e.g. the task), resampling is stratified: each group is resampled within itself and
the statistic is the unweighted mean of the per-group means, which is how the report averages
tasks, so the interval matches the table's averages; `weights` (one per group label) makes it a
weighted mean instead, e.g. clusters weighted equally whatever their number of tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def group_index(groups: Sequence[str] | None, n: int) -> dict[str | None, np.ndarray]:
    """Label -> the examples' indices, in sorted label order (None: one group of all)."""
    if groups is None:
        return {None: np.arange(n)}
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} labels for {n} examples; pass one per example")
    labels: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        labels.setdefault(g, []).append(i)
    return {g: np.asarray(labels[g]) for g in sorted(labels)}


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    groups: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Mean of `a - b` over paired examples and its percentile bootstrap interval.

    a, b: per-example metric values of two methods on the same examples, in the same order.
    groups: optional stratum per example (see the module docstring); groups are resampled in
    sorted label order, each with `rng.integers(0, size, (n_resamples, size))`.
    weights: optional weight per group label (every label of `groups`; normalised to sum 1);
    without it the groups weigh the same.
    Returns {"diff", "low", "high"}.
    """
    if len(a) != len(b) or not len(a):
        raise ValueError(
            f"paired bootstrap needs two equal, non-empty lists (got {len(a)}, {len(b)})"
        )
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)  # (n,)
    rng = np.random.default_rng(seed)
    index = group_index(groups, len(diff))
    if weights is not None:
        if groups is None:
            raise ValueError("weights needs groups (one label per example)")
        missing = [g for g in index if g not in weights]
        if missing:
            raise ValueError(f"weights has no weight for group(s) {missing}; give one per label")
    means, point = [], []
    for members in index.values():
        group = diff[members]  # (size,)
        idx = rng.integers(0, len(group), size=(n_resamples, len(group)))  # (resamples, size)
        means.append(group[idx].mean(axis=1))  # (resamples,)
        point.append(group.mean())
    if weights is None:
        stat, diff_mean = np.mean(np.stack(means), axis=0), float(np.mean(point))  # (resamples,)
    else:
        w = np.array([weights[g] for g in index], dtype=float)  # (groups,), in `means` order
        w /= w.sum()
        stat, diff_mean = w @ np.stack(means), float(w @ np.asarray(point))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stat, [tail, 100 - tail])
    return {"diff": diff_mean, "low": float(low), "high": float(high)}


def format_diff(d: dict[str, float], scale: float = 100, digits: int = 1, sep: str = ", ") -> str:
    """A `paired_bootstrap` result as '+1.2 [-0.3, +2.7]': each value times `scale` (100 for
    points of a 0-1 metric, 1 for ranking metrics), signed, `digits` decimals, `sep` between
    the bounds."""
    return (f"{scale * d['diff']:+.{digits}f} [{scale * d['low']:+.{digits}f}{sep}"
            f"{scale * d['high']:+.{digits}f}]")
