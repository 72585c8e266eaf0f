"""Round scheduling for benchmarks: ``pgmarina bench`` and the scripts in ``bench/``.

A small VM's speed drifts by tens of percent over a few seconds, so a ratio
of two medians taken seconds apart mostly measures the drift.  Instead every
round runs each contender once, in a fresh random order, and a contender's
ratio to a baseline is taken *within* the round; the median of those
per-round ratios is what gets reported, with the middle half of them (25th
to 75th percentile) beside it.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator, Sequence

__all__ = ["orders", "percentile", "quartiles", "ratios"]


def orders(names: Sequence[str], rounds: int, seed: int = 1) -> Iterator[list[str]]:
    """One shuffled running order per round."""
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(names)
        rng.shuffle(order)
        yield order


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """25th, 50th and 75th percentiles (all three the value itself for one value)."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def ratios(ops: Sequence[float], base: Sequence[float]) -> tuple[float, float, float]:
    """Quartiles of the per-round ratios ``ops[i] / base[i]``."""
    return quartiles([a / b for a, b in zip(ops, base, strict=True) if b])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]
