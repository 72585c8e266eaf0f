"""Benchmark: ``pgmarina.compat.psqlpy`` beside psqlpy's own pool, ``SELECT 1`` cycles.

Contenders, each in every round, in a fresh random order (see ``_rounds``):

  psqlpy          psqlpy's pool: ``async with pool.acquire() as c: await c.execute(...)``
                  (psqlpy 0.13 has no pool-level ``execute``)
  facade-execute  the façade's pool-level ``await pool.execute("SELECT 1")``
  facade-acquire  the façade, as the psqlpy line is written
  marina          pgmarina's AsyncPool on asyncpg: ``async with pool.connection()`` and
                  ``fetch``: what the façade adds on top of it is the difference

Every pool has ``--size`` connections, opened before the first round.  psqlpy runs
its driver in Rust (tokio-postgres); the façade runs asyncpg, so the comparison is
of the whole stack, not of the pools alone.

Usage:
  python bench/bench_psqlpy.py [--dsn DSN] [--conc 1,10] [--size 10] [--seconds 1]
                               [--rounds 7]

Without --dsn a throwaway cluster is started (pgmarina.contrib.embedded).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pgmarina
from _rounds import orders, parse_args, report, run_tasks
from pgmarina.compat import psqlpy as facade
from pgmarina.contrib import embedded

Cycle = Callable[[], Awaitable[None]]


@contextlib.asynccontextmanager
async def contenders(dsn: str, size: int) -> AsyncIterator[dict[str, Callable[[int], Cycle]]]:
    import psqlpy

    theirs = psqlpy.ConnectionPool(dsn=dsn, max_db_pool_size=max(size, 2))
    ours = facade.ConnectionPool(dsn=dsn, max_db_pool_size=size)
    marina = pgmarina.AsyncPool(dsn, min_size=size, max_size=size)
    await marina.open(wait=True)

    async def fill(acquire: Callable[[], Any]) -> None:
        # Both psqlpy pools are lazy: open every connection before measuring.
        held = [await acquire() for _ in range(size)]
        for conn in held:
            conn.close()

    await fill(theirs.connection)
    await fill(ours.connection)

    def psqlpy_cycle(i: int) -> Cycle:
        async def cycle() -> None:
            async with theirs.acquire() as conn:
                await conn.execute("SELECT 1")

        return cycle

    def facade_execute(i: int) -> Cycle:
        async def cycle() -> None:
            await ours.execute("SELECT 1")

        return cycle

    def facade_acquire(i: int) -> Cycle:
        async def cycle() -> None:
            async with ours.acquire() as conn:
                await conn.execute("SELECT 1")

        return cycle

    def marina_cycle(i: int) -> Cycle:
        async def cycle() -> None:
            async with marina.connection() as conn:
                await conn.fetch("SELECT 1")

        return cycle

    try:
        yield {"psqlpy": psqlpy_cycle, "facade-execute": facade_execute,
               "facade-acquire": facade_acquire, "marina": marina_cycle}
    finally:
        theirs.close()
        ours.close()
        await marina.close()


async def main(dsn: str, concs: list[int], size: int, seconds: float, rounds: int) -> None:
    async with contenders(dsn, size) as cycles:
        for conc in concs:
            results: dict[str, list[float]] = {name: [] for name in cycles}
            for order in orders(list(cycles), rounds):
                for name in order:
                    results[name].append(await run_tasks(cycles[name], conc, seconds))
            report(f"SELECT 1 cycles, conc {conc}, size {size}", results, ["psqlpy", "marina"])


if __name__ == "__main__":
    parser = parse_args(__doc__ or "", "conc", [1, 10])
    parser.add_argument("--dsn")
    args = parser.parse_args()
    if args.dsn:
        asyncio.run(main(args.dsn, args.conc, args.size, args.seconds, args.rounds))
    else:
        cluster = embedded.Cluster()
        cluster.start()
        try:
            asyncio.run(main(cluster.dsn, args.conc, args.size, args.seconds, args.rounds))
        finally:
            cluster.destroy()
