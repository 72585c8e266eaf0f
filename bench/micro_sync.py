"""Micro-benchmark: the thread Pool's own cost per cycle under contention, no server.

A lean fake driver stands in for the database, so what is timed is the
pool: ``with pool.connection() as conn: work()``, where ``work`` holds the
connection for ``--work-us`` microseconds with the GIL released (a sleep,
like a query's round trip) or, at ``0``, not at all (the pool alone).
Contenders take turns in rounds, as in ``bench_sync.py``; every line gives
µs per cycle (wall time / cycles of all threads together), the ratio to
``fifo-floor`` within each round, and the evenness (fewest / most cycles
of one thread).

Contenders:
  marina        pgmarina.Pool with its default settings
  bw=W          the same with barge_window=W, for each W of --barge (0: strict FIFO)
  fifo-floor    the bare lock + deque strict FIFO pool of bench_sync.py

``time.sleep`` sleeps longer than asked (timer slack): ``--work-us 50``
holds a connection for about 130 µs here.

Usage:
  python bench/micro_sync.py [--threads 1,10,50] [--size 10] [--work-us 0,50]
                             [--seconds 0.5] [--rounds 7] [--barge 0,0.05]
                             [--profile NAME]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import pgmarina
from _rounds import orders, run_threads
from bench_sync import BareFifo
from pgmarina.adapters import CLEAN, SyncAdapter

Cycle = Callable[[], None]


class _Conn:
    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False


def _clean(conn: Any) -> int:
    return CLEAN


def _is_closed(conn: Any) -> bool:
    return False


class LeanAdapter(SyncAdapter):
    """A driver whose connections cost nothing: the pool is all that is timed."""

    name = "lean"
    is_closed = staticmethod(_is_closed)  # type: ignore[assignment]
    status = staticmethod(_clean)  # type: ignore[assignment]
    quick_status = staticmethod(_clean)  # type: ignore[assignment]

    def connect(self, dsn: str | None, kwargs: Mapping[str, Any], timeout: float) -> Any:
        return _Conn()

    def close(self, conn: Any) -> None:
        conn.closed = True

    def terminate(self, conn: Any) -> None:
        conn.closed = True

    def ping(self, conn: Any) -> None:
        pass

    def rollback(self, conn: Any) -> None:
        pass

    def full_reset(self, conn: Any) -> None:
        pass


def contenders(size: int, windows: list[float]) -> tuple[dict[str, Any], Callable[[], None]]:
    pools: dict[str, Any] = {
        "marina": pgmarina.Pool(driver=LeanAdapter(), min_size=size, max_size=size)
    }
    for window in windows:
        pools[f"bw={window:g}"] = pgmarina.Pool(
            driver=LeanAdapter(), min_size=size, max_size=size, barge_window=window
        )
    for pool in pools.values():
        pool.open(wait=True)
    pools["fifo-floor"] = BareFifo([_Conn() for _ in range(size)])

    def close() -> None:
        for name, pool in pools.items():
            if name != "fifo-floor":
                pool.close()

    return pools, close


def factory(pool: Any, work_us: float) -> Callable[[int], Cycle]:
    pause = work_us / 1e6
    sleep = time.sleep

    def make(i: int) -> Cycle:
        if pause:
            def cycle() -> None:
                with pool.connection():
                    sleep(pause)
        else:
            def cycle() -> None:
                with pool.connection():
                    pass
        return cycle

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser.add_argument("--threads", type=ints, default=[1, 10, 50])
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--work-us", type=ints, default=[0, 50])
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--barge", type=lambda s: [float(x) for x in s.split(",") if x],
                        default=[0.0, 0.05], help="barge windows to run besides the default")
    parser.add_argument("--profile", help="profile one contender (cProfile, all threads)")
    args = parser.parse_args()
    if args.profile:
        _profile(args)
        return
    print(f"size={args.size} seconds={args.seconds} rounds={args.rounds}")
    for work_us in args.work_us:
        for threads in args.threads:
            pools, close = contenders(args.size, args.barge)
            try:
                makes = {name: factory(pool, work_us) for name, pool in pools.items()}
                for make in makes.values():
                    run_threads(make, threads, 0.2)
                ops: dict[str, list[float]] = {name: [] for name in makes}
                even: dict[str, list[float]] = {name: [] for name in makes}
                for order in orders(list(makes), args.rounds):
                    for name in order:
                        rate, evenness = run_threads(makes[name], threads, args.seconds)
                        ops[name].append(rate)
                        even[name].append(evenness)
            finally:
                close()
            print(f"\nwork={work_us}us threads={threads}")
            for name in makes:
                us = statistics.median(1e6 / r for r in ops[name])
                ratios = sorted(f / m for m, f in zip(ops[name], ops["fifo-floor"], strict=True))
                q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
                print(f"  {name:<13} {us:7.2f} us/cycle   {q2:.2f}x the floor's time "
                      f"[{q1:.2f}-{q3:.2f}]   even {statistics.median(even[name]):.2f}")


def _profile(args: argparse.Namespace) -> None:
    import cProfile
    import pstats

    pools, close = contenders(args.size, args.barge)
    profiles: list[cProfile.Profile] = []
    make = factory(pools[args.profile], args.work_us[0])

    def profiled(i: int) -> Cycle:
        cycle = make(i)
        prof = cProfile.Profile()
        profiles.append(prof)

        def run() -> None:
            prof.enable()
            try:
                cycle()
            finally:
                prof.disable()

        return run

    try:
        run_threads(profiled, args.threads[0], args.seconds)
    finally:
        close()
    stats = pstats.Stats(profiles[0])
    for prof in profiles[1:]:
        stats.add(prof)
    stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
