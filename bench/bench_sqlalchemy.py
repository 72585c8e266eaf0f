"""Benchmark: a SQLAlchemy engine on PgMarinaPool beside SQLAlchemy's default pools.

One cycle is SQLAlchemy's everyday checkout::

    with engine.connect() as c:
        c.execute(text("SELECT 1"))

(``async with`` and ``await`` on the async engine), so each cycle also pays
the engine's own work (the Connection object, the reset on return: a
ROLLBACK round trip unless the connection is in autocommit) on top of the
pool's.  The engines run in the driver's default (transactional) mode, as
most applications do, so every cycle is two round trips on every contender.

Contenders, each an engine on the same URL with ``pool_size=size,
max_overflow=0`` (``size`` connections at most):
  queuepool   SQLAlchemy's default pool: QueuePool (sync), AsyncAdaptedQueuePool (async)
  marina      pgmarina.contrib.sqlalchemy.PgMarinaPool with pgmarina's defaults

The sync engine runs at 1, 10 and 50 threads, then the async engine at 1, 10
and 100 tasks, in one run.  Every round runs each contender once, in a fresh
random order, and ratios are taken within the round (see ``_rounds.py``);
the report gives medians over ``--rounds`` rounds (7 or more).

Usage:
  python bench/bench_sqlalchemy.py [--dsn DSN] [--driver psycopg|psycopg2]
                                   [--async-driver asyncpg|psycopg]
                                   [--threads 1,10,50] [--conc 1,10,100]
                                   [--size 10] [--seconds 1] [--rounds 7]

Without --dsn a throwaway cluster is started (pgmarina.contrib.embedded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from _rounds import orders, parse_args, report, run_tasks, run_threads
from pgmarina.contrib import embedded
from pgmarina.contrib.sqlalchemy import PgMarinaPool

SELECT_1 = text("SELECT 1")


def _engines(make: Callable[..., Any], url: sa.URL, size: int) -> dict[str, Any]:
    return {
        "queuepool": make(url, pool_size=size, max_overflow=0),
        "marina": make(url, poolclass=PgMarinaPool, pool_size=size, max_overflow=0),
    }


def _sync_cycle(engine: Any) -> Callable[[int], Callable[[], None]]:
    def make(i: int) -> Callable[[], None]:
        def cycle() -> None:
            with engine.connect() as c:
                c.execute(SELECT_1)

        return cycle

    return make


def _async_cycle(engine: Any) -> Callable[[int], Callable[[], Awaitable[None]]]:
    def make(i: int) -> Callable[[], Awaitable[None]]:
        async def cycle() -> None:
            async with engine.connect() as c:
                await c.execute(SELECT_1)

        return cycle

    return make


def bench_sync(args: Any, dsn: str) -> None:
    url = sa.make_url(dsn).set(drivername=f"postgresql+{args.driver}")
    print(f"\n== sync engine, driver={args.driver} size={args.size} seconds={args.seconds} "
          f"rounds={args.rounds}")
    engines = _engines(sa.create_engine, url, args.size)
    try:
        for threads in args.threads:
            results: dict[str, list[float]] = {name: [] for name in engines}
            for engine in engines.values():  # warm-up: opens the connections
                run_threads(_sync_cycle(engine), threads, 0.3)
            for order in orders(list(engines), args.rounds):
                for name in order:
                    ops, _ = run_threads(_sync_cycle(engines[name]), threads, args.seconds)
                    results[name].append(ops)
            report(f"threads={threads}", results, ["queuepool"])
    finally:
        for engine in engines.values():
            engine.dispose()


async def bench_async(args: Any, dsn: str) -> None:
    url = sa.make_url(dsn).set(drivername=f"postgresql+{args.async_driver}")
    print(f"\n== async engine, driver={args.async_driver} size={args.size} "
          f"seconds={args.seconds} rounds={args.rounds}")
    engines = _engines(create_async_engine, url, args.size)
    try:
        for conc in args.conc:
            results: dict[str, list[float]] = {name: [] for name in engines}
            for engine in engines.values():
                await run_tasks(_async_cycle(engine), conc, 0.3)
            for order in orders(list(engines), args.rounds):
                for name in order:
                    results[name].append(
                        await run_tasks(_async_cycle(engines[name]), conc, args.seconds)
                    )
            report(f"conc={conc}", results, ["queuepool"])
    finally:
        for engine in engines.values():
            await engine.dispose()


def main() -> None:
    parser = parse_args(__doc__.splitlines()[0], "threads", [1, 10, 50])
    parser.add_argument("--conc", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 10, 100])
    parser.add_argument("--driver", choices=["psycopg", "psycopg2"], default="psycopg")
    parser.add_argument("--async-driver", choices=["asyncpg", "psycopg"], default="asyncpg")
    parser.add_argument("--dsn")
    args = parser.parse_args()
    if args.dsn:
        bench_sync(args, args.dsn)
        asyncio.run(bench_async(args, args.dsn))
        return
    cluster = embedded.Cluster()
    cluster.start()
    try:
        bench_sync(args, cluster.dsn)
        asyncio.run(bench_async(args, cluster.dsn))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
