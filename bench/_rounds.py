"""Reporting shared by the benchmarks; the round scheduling is
:mod:`pgmarina.cli._rounds`, shared with ``pgmarina bench``.

This machine's speed drifts by tens of percent over a few seconds (it is a
small VM with neighbours), so a ratio of two medians taken seconds apart
mostly measures the drift.  Instead every round runs each contender once,
in a fresh random order, and a contender's ratio to a baseline is taken
*within* the round; the median of those per-round ratios is reported,
with the middle half of them ([25th-75th percentile]) beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pgmarina.cli._rounds import orders, quartiles

C = TypeVar("C")

__all__ = ["orders", "parse_args", "report", "run_tasks", "run_threads", "same", "use_loop"]


def same(cycle: C) -> Callable[[int], C]:
    """The factory that gives every worker the one ``cycle``."""
    return lambda i: cycle


def run_threads(
    factory: Callable[[int], Callable[[], object]], threads: int, seconds: float
) -> tuple[float, float]:
    """Run ``factory(i)()`` in a loop on ``threads`` threads for ``seconds``.

    Each thread makes its cycle first, then all start together at a barrier,
    so the set-up is not timed.

    Returns:
        Cycles per second of all threads together, and the evenness: the
        fewest cycles of one thread over the most (1.0: perfectly even).
    """
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        cycle = factory(i)
        start.wait()
        n = 0
        stop = stop_at[0]
        while time.perf_counter() < stop:
            cycle()
            n += 1
        counts[i] = n

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - t0), min(counts) / max(max(counts), 1)


async def run_tasks(
    factory: Callable[[int], Callable[[], Awaitable[object]]], tasks: int, seconds: float
) -> float:
    """Await ``factory(i)()`` in a loop on ``tasks`` tasks for ``seconds``.

    Returns:
        Cycles per second of all tasks together.
    """
    stop = time.perf_counter() + seconds
    counts = [0] * tasks

    async def worker(i: int) -> None:
        cycle = factory(i)
        n = 0
        while time.perf_counter() < stop:
            await cycle()
            n += 1
        counts[i] = n

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    return sum(counts) / (time.perf_counter() - t0)


def report(
    title: str,
    results: dict[str, list[float]],
    baselines: Sequence[str],
    evenness: dict[str, list[float]] | None = None,
) -> None:
    """Print ops/s and per-round ratios against each baseline.

    ``evenness``: per round, a contender's fewest / most cycles of one worker.
    """
    print(f"\n{title}")
    for name, ops in results.items():
        line = f"  {name:<13} {statistics.median(ops):>9.0f} ops/s"
        for base in baselines:
            if base == name:
                line += f"   {'1.00x':>5} {base:<12} {'':>13}"
                continue
            ratios = [a / b for a, b in zip(ops, results[base], strict=True)]
            q1, q2, q3 = quartiles(ratios)
            line += f"   {q2:.2f}x {base:<12} [{q1:.2f}-{q3:.2f}]"
        if evenness is not None:
            line += f"   even {statistics.median(evenness[name]):.2f}"
        print(line)


def parse_args(
    description: str, counts: str, default_counts: list[int], *, loop: bool = False
) -> argparse.ArgumentParser:
    """A parser with the options every bench shares; ``counts``: ``"conc"`` or ``"threads"``.

    With ``loop``, ``--loop uvloop`` is offered; :func:`use_loop` installs it.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(f"--{counts}", type=lambda s: [int(x) for x in s.split(",")],
                        default=default_counts)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=7)
    if loop:
        parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    return parser


def use_loop(args: argparse.Namespace) -> None:
    """Install uvloop's event loop policy if ``--loop uvloop`` was given."""
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
