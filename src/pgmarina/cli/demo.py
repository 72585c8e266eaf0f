"""``pgmarina demo``: a concurrent workload that survives a server restart."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import AsyncPool, PoolError

__all__ = ["run_demo"]


@dataclass
class _Tally:
    cycles: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _server(dsn: str | None) -> Iterator[tuple[str, Any]]:
    if dsn:
        yield dsn, None
        return
    from ..contrib import embedded

    cluster = embedded.Cluster()
    cluster.start()
    try:
        yield cluster.dsn, cluster
    finally:
        cluster.destroy()


async def _workload(pool: AsyncPool, driver: str, tally: _Tally, stop: float) -> None:
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        try:
            async with pool.connection(timeout=10.0) as conn:
                if driver == "asyncpg":
                    await conn.fetchval("SELECT pg_sleep(0.002)")
                else:
                    await conn.execute("SELECT pg_sleep(0.002)")
        except (PoolError, OSError) as exc:
            name = type(exc).__name__
            tally.errors[name] = tally.errors.get(name, 0) + 1
            await asyncio.sleep(0.01)
            continue
        except Exception as exc:  # a query on a connection the restart killed
            name = type(exc).__name__
            if name not in tally.errors:
                tally.events.append(f"{name}: {exc}")
            tally.errors[name] = tally.errors.get(name, 0) + 1
            continue
        tally.latencies.append(time.perf_counter() - t0)
        tally.cycles += 1


def _table(pool: AsyncPool, tally: _Tally, elapsed: float) -> Any:
    from rich.table import Table

    s = pool.stats()
    table = Table(title=f"pgmarina demo — {elapsed:4.1f}s", title_justify="left")
    table.add_column("pool", style="cyan")
    table.add_column("", justify="right")
    table.add_column("counters", style="cyan")
    table.add_column("", justify="right")
    rows = [
        ("size / max", f"{s.size}/{s.max_size}", "acquires", f"{s.acquires}"),
        ("idle", f"{s.idle}", "waited acquires", f"{s.waited_acquires}"),
        ("in use", f"{s.in_use}", "connections opened", f"{s.connections_opened}"),
        ("waiting", f"{s.waiting}", "connections lost", f"{s.connections_lost}"),
        ("connecting", f"{s.connecting}", "connect failures", f"{s.connections_failed}"),
        ("cycles done", f"{tally.cycles}", "errors seen", f"{sum(tally.errors.values())}"),
    ]
    for row in rows:
        table.add_row(*row)
    if tally.events:
        table.caption = " · ".join(tally.events[-3:])
    return table


async def _main(args: argparse.Namespace, dsn: str, cluster: Any) -> _Tally:
    tally = _Tally()
    pool = AsyncPool(
        dsn,
        driver=args.driver,
        min_size=2,
        max_size=args.size,
        timeout=10.0,
        name="demo",
        connect_kwargs={"autocommit": True} if args.driver == "psycopg" else None,
    )
    async with pool:
        start = time.monotonic()
        stop = start + args.seconds
        tasks = [asyncio.create_task(_workload(pool, args.driver, tally, stop))
                 for _ in range(args.tasks)]
        restart = cluster is not None and not args.no_restart
        restart_at = start + args.seconds / 3 if restart else None
        live: Any = None
        try:
            from rich.live import Live

            live = Live(_table(pool, tally, 0.0), refresh_per_second=8)
        except ImportError:  # rich is optional: print plain lines instead
            pass
        with live if live is not None else contextlib.nullcontext():
            while not all(t.done() for t in tasks):
                await asyncio.sleep(0.25)
                now = time.monotonic()
                if restart_at is not None and now >= restart_at:
                    restart_at = None
                    tally.events.append(f"server restarted at {now - start:.1f}s")
                    await asyncio.to_thread(cluster.restart)
                if live is not None:
                    live.update(_table(pool, tally, now - start))
                else:
                    print(f"{now - start:5.1f}s {pool!r}")
        await asyncio.gather(*tasks)
        print(repr(pool))
        print(pool.stats())
    return tally


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the process exit code."""
    with _server(args.dsn) as (dsn, cluster):
        where = "embedded PostgreSQL" if cluster is not None else "the given server"
        print(f"pgmarina demo: {args.tasks} tasks on a pool of {args.size} ({args.driver}), "
              f"{args.seconds:g}s on {where}")
        tally = asyncio.run(_main(args, dsn, cluster))
    lat = sorted(tally.latencies)
    if lat:
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        worst = lat[-1] * 1000
        print(f"cycles: {tally.cycles}  ({tally.cycles / args.seconds:.0f}/s)   "
              f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.0f} ms")
    errors = ", ".join(f"{k}: {v}" for k, v in tally.errors.items()) or "none"
    print(f"errors: {errors}")
    if tally.errors:
        print("  (queries that were running on, or just starting on, a connection the server"
              " killed when it restarted; every other caller waited and was served)")
    for event in tally.events:
        print(f"event: {event}")
    return 0 if tally.cycles else 1
