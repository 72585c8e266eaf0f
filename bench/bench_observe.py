"""Benchmark: what observability costs on the hot path, with no server at all.

Interleaved A/B in one process (see ``_rounds.py``): each round runs every
contender once, in a shuffled order, for ``--seconds``; a contender's cost is
its time per cycle divided by ``before``'s in the same round, and the median
of those ratios is reported with its middle half.  A cycle is one
acquire of an idle connection and one release of a clean one by a single
caller (``async with pool.connection()`` / ``with pool.connection()``) on a
driver whose connections cost nothing: the pool's own cost, the worst case
for any addition (with a real query, the same nanoseconds weigh far less).

Contenders:
  before      the pool with the release path as it was before the histograms
              (the usage-time histogram update taken out of ``PoolCore.checkin``)
  histograms  the pool as it is: wait/usage histograms always on
  leak        the same with ``leak_timeout`` on (each acquire notes its stack)
  otel        the same with OpenTelemetry instruments attached (if installed)

Usage:
  python bench/bench_observe.py [--seconds 0.3] [--rounds 15] [--shell async,sync]

It first times the core's checkout + checkin alone (the histogram's cost in
nanoseconds, with little noise), then the shells' whole cycles.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import pgmarina
from _rounds import orders
from bench_overhead_async import NullAdapter
from micro_sync import LeanAdapter
from pgmarina._core import PoolCore
from pgmarina._core.entry import IDLE, IN_USE, RESETTING


class _Before(PoolCore[Any]):
    """``checkin`` as it was before the usage histogram (for the A/B only)."""

    def checkin(self, entry: Any, now: float) -> None:
        state = entry.state
        if state is not IN_USE and state is not RESETTING:
            raise AssertionError("bench: unexpected state")
        self.usage_time_total += now - entry.acquired_at
        entry.alive_at = now
        max_uses = self._max_uses
        if (
            entry.expires_at <= now
            or entry.generation != self.generation
            or self.closing
            or (max_uses and entry.uses >= max_uses)
            or (self.size > self._keep_cap and (self.size > self._max_size or not self.waiters))
        ):
            self._retire(entry, now)
            return
        if self.waiters:
            self._give(entry, now, True)
        else:
            entry.state = IDLE
            entry.idle_since = now
            self.idle.append(entry)


def _otel(pool: Any) -> Any:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from pgmarina.contrib.otel import instrument
    except ImportError:
        return None
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return instrument(pool, meter_provider=provider)


def _pools(kind: str) -> dict[str, Any]:
    cls: Any = pgmarina.AsyncPool if kind == "async" else pgmarina.Pool
    driver = NullAdapter() if kind == "async" else LeanAdapter()
    made = {
        name: cls(driver=driver, min_size=1, max_size=1, check_window=None, **kw)
        for name, kw in {
            "before": {}, "histograms": {}, "leak": {"leak_timeout": 60.0}, "otel": {},
        }.items()
    }
    made["before"]._core.__class__ = _Before
    if _otel(made["otel"]) is None:
        del made["otel"]
    return made


async def _async_round(pool: Any, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(200):
            async with pool.connection():
                pass
        n += 200
        if time.perf_counter() >= end:
            return (time.perf_counter() - start) / n


def _sync_round(pool: Any, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(200):
            with pool.connection():
                pass
        n += 200
        if time.perf_counter() >= end:
            return (time.perf_counter() - start) / n


async def bench(kind: str, seconds: float, rounds: int) -> None:
    pools = _pools(kind)
    run: Callable[[Any, float], Any]
    if kind == "async":
        for p in pools.values():
            await p.open(wait=True)
        run = _async_round
    else:
        for p in pools.values():
            p.open(wait=True)

        async def run(pool: Any, secs: float) -> float:
            return _sync_round(pool, secs)

    per_cycle: dict[str, list[float]] = {name: [] for name in pools}
    for name in pools:  # warm-up
        await run(pools[name], 0.1)
    for order in orders(list(pools), rounds):
        for name in order:
            per_cycle[name].append(await run(pools[name], seconds))
    print(f"\n{kind} shell, one caller, idle acquire + clean release ({rounds} rounds)")
    for name, times in per_cycle.items():
        ratios = sorted(t / b for t, b in zip(times, per_cycle["before"], strict=True))
        q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        best = min(times) / min(per_cycle["before"])
        print(
            f"  {name:<11} {statistics.median(times) * 1e6:7.2f} µs/cycle   "
            f"x{q2:.3f} of before [{q1:.3f}-{q3:.3f}]   best-of-rounds x{best:.3f}"
        )
    for p in pools.values():
        if kind == "async":
            await p.close()
        else:
            p.close()


def core_delta(rounds: int) -> None:
    """The nanoseconds the histogram adds to one core checkout + checkin.

    The shells' cycles above are noisy on a shared machine; the core's two
    calls alone, timed in short alternating slices, show the difference
    itself, which is then set against a whole cycle's time.
    """
    from pgmarina._core import PoolConfig

    def core(cls: type[PoolCore[Any]]) -> tuple[PoolCore[Any], Any]:
        c = cls(PoolConfig(min_size=1, max_size=1, check_window=None), lambda w, e: True)
        c.open(0.0)
        (entry,) = c.pending
        c.pending.clear()
        c.connect_succeeded(entry, object(), 0.0)
        return c, entry

    cores = {"before": core(_Before), "histograms": core(PoolCore)}
    best: dict[str, list[float]] = {name: [] for name in cores}
    for order in orders(list(cores), rounds):
        for name in order:
            c, _ = cores[name]
            checkout, checkin = c.checkout, c.checkin
            n = 20000
            start = time.perf_counter()
            for _ in range(n):
                e = checkout(1.0)
                checkin(e, 1.001)
            best[name].append((time.perf_counter() - start) / n)
    med = {name: statistics.median(v) for name, v in best.items()}
    low = {name: min(v) for name, v in best.items()}
    print(f"\ncore checkout + checkin ({rounds} rounds of 20000)")
    for name in cores:
        print(f"  {name:<11} median {med[name] * 1e9:6.0f} ns   best {low[name] * 1e9:6.0f} ns")
    print(f"  histogram update: {(med['histograms'] - med['before']) * 1e9:+.0f} ns (median), "
          f"{(low['histograms'] - low['before']) * 1e9:+.0f} ns (best)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--shell", default="async,sync")
    args = parser.parse_args()
    core_delta(max(args.rounds, 21))
    for kind in filter(None, args.shell.split(",")):
        asyncio.run(bench(kind, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
