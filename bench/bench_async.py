"""Benchmark: pgmarina's AsyncPool against the raw driver and the peer pools.

One cycle is: acquire a connection, run ``SELECT 1``, release it.  Every
contender runs the same cycle from ``conc`` tasks for ``--seconds``; the
contenders take turns in rounds, in a fresh random order each round, and
every ratio is taken within a round (see ``_rounds.py``), so that drift in
the machine's speed hits them all alike.

Contenders (driver asyncpg):
  raw10        ten dedicated connections driven by ten tasks, whatever ``conc`` is: the
               most ten server connections can deliver, so the honest ceiling for a pool
               of ten (``--size``) at any concurrency
  raw          one dedicated asyncpg connection per task (no pool at all)
  asyncpg      asyncpg.create_pool(min_size=size, max_size=size)
  marina       pgmarina.AsyncPool(reset="auto")
  marina-full  pgmarina.AsyncPool(reset="full")  (same reset work as asyncpg's pool)
  marina-none  pgmarina.AsyncPool(reset=None)
  facade       pgmarina.compat.asyncpg.create_pool(min_size=size, max_size=size): asyncpg's
               API and its default (full) reset
  facade-noop  the same with a no-op ``reset`` coroutine (asyncpg's way to turn the reset off)
  raw+reset    one dedicated connection per task running SELECT 1 and then asyncpg's
               reset query: no pool at all
  raw10+reset  ten dedicated connections driven by ten tasks, each running SELECT 1 and
               then asyncpg's reset query, at every conc: no pool at all, so the ceiling
               for any pool of ten that resets fully (two round trips a cycle) once conc
               reaches ten

Contenders (driver psycopg):
  raw10        ten dedicated connections driven by ten tasks (as above)
  raw          one dedicated psycopg.AsyncConnection per task
  psycopg_pool psycopg_pool.AsyncConnectionPool
  marina       pgmarina.AsyncPool(driver="psycopg")
  facade       pgmarina.compat.psycopg_pool.AsyncConnectionPool: psycopg_pool's API on
               marina (its ratio to marina is the façade's cost)

Usage:
  python bench/bench_async.py [--driver asyncpg|psycopg] [--dsn DSN] [--loop asyncio|uvloop]
                              [--conc 1,10,100] [--size 10] [--seconds 1] [--rounds 7]
                              [--only NAME,NAME,...]

Without --dsn a throwaway cluster is started (pgmarina.contrib.embedded).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pgmarina
from _rounds import orders, parse_args, report, run_tasks, use_loop
from pgmarina.contrib import embedded

Cycle = Callable[[], Awaitable[None]]


@contextlib.asynccontextmanager
async def asyncpg_contenders(
    dsn: str, conc: int, size: int
) -> AsyncIterator[dict[str, Callable[[int], Cycle]]]:
    import asyncpg

    import pgmarina.compat.asyncpg as compat_asyncpg

    raws = [await asyncpg.connect(dsn) for _ in range(max(conc, size))]
    peer = await asyncpg.create_pool(dsn, min_size=size, max_size=size)
    auto = pgmarina.AsyncPool(dsn, min_size=size, max_size=size)
    full = pgmarina.AsyncPool(dsn, min_size=size, max_size=size, reset="full")
    none = pgmarina.AsyncPool(dsn, min_size=size, max_size=size, reset=None)
    await auto.open(wait=True)
    await full.open(wait=True)
    await none.open(wait=True)

    async def no_reset(conn: object) -> None:
        pass

    facade = await compat_asyncpg.create_pool(dsn, min_size=size, max_size=size)
    facade_noop = await compat_asyncpg.create_pool(
        dsn, min_size=size, max_size=size, reset=no_reset
    )

    def raw(i: int) -> Cycle:
        conn = raws[i]

        async def cycle() -> None:
            await conn.fetchval("SELECT 1")

        return cycle

    def acquiring(pool: Any) -> Callable[[int], Cycle]:
        """The cycle on asyncpg's API: ``async with pool.acquire()``."""

        def make(i: int) -> Cycle:
            async def cycle() -> None:
                async with pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")

            return cycle

        return make

    peer_cycle = acquiring(peer)

    def raw_reset(i: int) -> Cycle:
        conn = raws[i % len(raws)]
        query = conn.get_reset_query()

        async def cycle() -> None:
            await conn.fetchval("SELECT 1")
            await conn.execute(query)

        return cycle

    def marina(pool: pgmarina.AsyncPool) -> Callable[[int], Cycle]:
        def make(i: int) -> Cycle:
            async def cycle() -> None:
                async with pool.connection() as conn:
                    await conn.fetchval("SELECT 1")

            return cycle

        return make

    try:
        yield {"raw10": raw, "raw": raw, "asyncpg": peer_cycle, "marina": marina(auto),
               "marina-full": marina(full), "marina-none": marina(none),
               "facade": acquiring(facade), "facade-noop": acquiring(facade_noop),
               "raw+reset": raw_reset, "raw10+reset": raw_reset}
    finally:
        await facade.close()
        await facade_noop.close()
        await auto.close()
        await full.close()
        await none.close()
        await peer.close()
        for c in raws:
            await c.close()


@contextlib.asynccontextmanager
async def psycopg_contenders(
    dsn: str, conc: int, size: int
) -> AsyncIterator[dict[str, Callable[[int], Cycle]]]:
    import psycopg
    import psycopg_pool

    raws = [
        await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        for _ in range(max(conc, size))
    ]
    peer = psycopg_pool.AsyncConnectionPool(
        dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False
    )
    await peer.open(wait=True)
    auto = pgmarina.AsyncPool(dsn, driver="psycopg", min_size=size, max_size=size,
                              autocommit=True)
    await auto.open(wait=True)
    from pgmarina.compat.psycopg_pool import AsyncConnectionPool as Facade

    facade = Facade(dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False)
    await facade.open(wait=True)

    def raw(i: int) -> Cycle:
        conn = raws[i]

        async def cycle() -> None:
            cur = await conn.execute("SELECT 1")
            await cur.fetchone()

        return cycle

    def peer_cycle(i: int) -> Cycle:
        async def cycle() -> None:
            async with peer.connection() as conn:
                cur = await conn.execute("SELECT 1")
                await cur.fetchone()

        return cycle

    def marina(i: int) -> Cycle:
        async def cycle() -> None:
            async with auto.connection() as conn:
                cur = await conn.execute("SELECT 1")
                await cur.fetchone()

        return cycle

    def facade_cycle(i: int) -> Cycle:
        async def cycle() -> None:
            async with facade.connection() as conn:
                cur = await conn.execute("SELECT 1")
                await cur.fetchone()

        return cycle

    try:
        yield {"raw10": raw, "raw": raw, "psycopg_pool": peer_cycle, "marina": marina,
               "facade": facade_cycle}
    finally:
        await facade.close()
        await auto.close()
        await peer.close()
        for c in raws:
            await c.close()


async def bench(args: argparse.Namespace, dsn: str) -> None:
    make = asyncpg_contenders if args.driver == "asyncpg" else psycopg_contenders
    peer = "asyncpg" if args.driver == "asyncpg" else "psycopg_pool"
    print(f"driver={args.driver} loop={args.loop} size={args.size} seconds={args.seconds} "
          f"rounds={args.rounds}")
    for conc in args.conc:
        async with make(dsn, conc, args.size) as contenders:
            if args.only:
                unknown = sorted(set(args.only) - set(contenders))
                if unknown:
                    raise SystemExit(f"--only: no contender named {', '.join(unknown)} "
                                     f"(there are: {', '.join(contenders)})")
                contenders = {k: v for k, v in contenders.items() if k in args.only}
            # raw10 drives ``size`` connections from as many tasks, at every conc.
            tasks = {
                name: args.size if name.startswith("raw10") else conc for name in contenders
            }
            results: dict[str, list[float]] = {name: [] for name in contenders}
            for name, factory in contenders.items():  # warm-up
                await run_tasks(factory, tasks[name], 0.3)
            for order in orders(list(contenders), args.rounds):
                for name in order:
                    results[name].append(
                        await run_tasks(contenders[name], tasks[name], args.seconds)
                    )
        # marina-none is what facade-noop is held to (not more than 5 % slower); with
        # psycopg, marina is what the psycopg_pool façade is held to.
        # raw10+reset is the ceiling of a fully resetting pool of ten (see above).
        extra = ["marina-none", "raw10+reset"] if args.driver == "asyncpg" else ["marina"]
        baselines = [b for b in ["raw10", "raw", peer, *extra] if b in results]
        report(f"conc={conc}", results, baselines)


async def fairness(dsn: str, driver: str, seconds: float) -> None:
    """200 tasks share 10 connections; FIFO hand-off should keep them even."""
    extra = {"autocommit": True} if driver == "psycopg" else {}
    pool = pgmarina.AsyncPool(dsn, driver=driver, min_size=10, max_size=10, **extra)
    await pool.open(wait=True)
    counts = [0] * 200
    stop = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        while time.perf_counter() < stop:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
            counts[i] += 1

    await asyncio.gather(*(worker(i) for i in range(200)))
    await pool.close()
    print(
        f"\nfairness: 200 tasks on 10 connections, {sum(counts)} cycles: "
        f"min {min(counts)}, max {max(counts)}, min/max {min(counts) / max(counts):.3f}"
    )


def main() -> None:
    parser = parse_args(__doc__.splitlines()[0], "conc", [1, 10, 100], loop=True)
    parser.add_argument("--driver", choices=["asyncpg", "psycopg"], default="asyncpg")
    parser.add_argument("--dsn")
    parser.add_argument("--only", type=lambda s: s.split(","), default=None,
                        help="run only these contenders (comma-separated names)")
    args = parser.parse_args()
    use_loop(args)
    if args.dsn:
        asyncio.run(bench(args, args.dsn))
        asyncio.run(fairness(args.dsn, args.driver, 3.0))
        return
    cluster = embedded.Cluster()
    cluster.start()
    try:
        asyncio.run(bench(args, cluster.dsn))
        asyncio.run(fairness(cluster.dsn, args.driver, 3.0))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()

