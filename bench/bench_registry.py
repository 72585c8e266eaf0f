"""Benchmark: a pool inside a registry against a standalone pool, one DSN.

One cycle is: acquire a connection, run ``SELECT 1``, fetch the row, release
it, with ``threads`` threads for ``--seconds``; contenders take turns in
rounds, in a fresh random order each round, and ratios are taken within a
round (see ``_rounds.py``).  Issue 14's target: a registry pool within 5 %
of a standalone one.

Contenders (thread ``Pool``, driver psycopg, min_size = max_size = --size):
  standalone    pgmarina.Pool(dsn)
  in-registry   registry.pool(dsn), looked up once: the same pool, drawing its
                connections from the registry's budget (max_total = 2 * size)
  lookup        registry.connection(dsn) on every cycle: the lookup (a dict
                get on the memo) and the context manager around the lease

With --async: the same three on AsyncPool and asyncpg, with --threads read
as the number of concurrent tasks.  With --lean: the thread pools on
micro_sync.py's fake driver, no server and an empty block, so what is timed
is the pools' own cost (the machine's network noise drops out).

Usage:
  python bench/bench_registry.py [--dsn DSN] [--threads 1,10] [--size 10]
                                 [--seconds 1] [--rounds 7]
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pgmarina
from _rounds import orders, parse_args, report, run_tasks, run_threads, same
from pgmarina.contrib import embedded
from pgmarina.registry import AsyncPoolRegistry, PoolRegistry

Cycle = Callable[[], None]


def bench(args: object, dsn: str | None) -> None:
    size = args.size  # type: ignore[attr-defined]
    lean = dsn is None
    settings: dict[str, object] = {"min_size": size, "max_size": size}
    if lean:
        from micro_sync import LeanAdapter

        settings["driver"] = LeanAdapter()
    else:
        settings.update(driver="psycopg", autocommit=True)
    standalone = pgmarina.Pool(dsn, **settings)  # type: ignore[arg-type]
    standalone.open(wait=True)
    registry = PoolRegistry(max_total=2 * size, **settings)
    inside = registry.pool(dsn)
    inside.wait(10)

    def work(conn: object) -> None:
        if not lean:
            conn.execute("SELECT 1").fetchone()  # type: ignore[attr-defined]

    def cycle_standalone() -> None:
        with standalone.connection() as conn:
            work(conn)

    def cycle_inside() -> None:
        with inside.connection() as conn:
            work(conn)

    def cycle_lookup() -> None:
        with registry.connection(dsn) as conn:
            work(conn)

    cycles = {"standalone": same(cycle_standalone), "in-registry": same(cycle_inside),
              "lookup": same(cycle_lookup)}
    try:
        for threads in args.threads:  # type: ignore[attr-defined]
            results: dict[str, list[float]] = {name: [] for name in cycles}
            for order in orders(list(cycles), args.rounds):  # type: ignore[attr-defined]
                for name in order:
                    ops, _ = run_threads(
                        cycles[name], threads, args.seconds  # type: ignore[attr-defined]
                    )
                    results[name].append(ops)
            report(f"threads={threads}", results, ["standalone"])
    finally:
        standalone.close()
        registry.close()


async def abench(args: object, dsn: str) -> None:
    size = args.size  # type: ignore[attr-defined]
    settings = {"driver": "asyncpg", "min_size": size, "max_size": size}
    standalone = pgmarina.AsyncPool(dsn, **settings)  # type: ignore[arg-type]
    await standalone.open(wait=True)
    registry = AsyncPoolRegistry(max_total=2 * size, **settings)
    inside = await registry.pool(dsn)
    await inside.wait(10)

    async def cycle_standalone() -> None:
        async with standalone.connection() as conn:
            await conn.fetchval("SELECT 1")

    async def cycle_inside() -> None:
        async with inside.connection() as conn:
            await conn.fetchval("SELECT 1")

    async def cycle_lookup() -> None:
        async with registry.connection(dsn) as conn:
            await conn.fetchval("SELECT 1")

    cycles = {"standalone": same(cycle_standalone), "in-registry": same(cycle_inside),
              "lookup": same(cycle_lookup)}
    try:
        for tasks in args.threads:  # type: ignore[attr-defined]
            results: dict[str, list[float]] = {name: [] for name in cycles}
            for order in orders(list(cycles), args.rounds):  # type: ignore[attr-defined]
                for name in order:
                    results[name].append(
                        await run_tasks(cycles[name], tasks, args.seconds)  # type: ignore[attr-defined]
                    )
            report(f"async, tasks={tasks}", results, ["standalone"])
    finally:
        await standalone.close()
        await registry.close()


def main() -> None:
    parser = parse_args((__doc__ or "").splitlines()[0], "threads", [1, 10])
    parser.add_argument("--dsn")
    parser.add_argument("--async", dest="use_async", action="store_true")
    parser.add_argument("--lean", action="store_true", help="no server: a fake driver")
    args = parser.parse_args()
    if args.lean:
        bench(args, None)
        return

    def run(dsn: str) -> None:
        if args.use_async:
            asyncio.run(abench(args, dsn))
        else:
            bench(args, dsn)

    if args.dsn:
        run(args.dsn)
        return
    cluster = embedded.Cluster()
    cluster.start()
    try:
        run(cluster.dsn)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
