"""``pgmarina demo``: a concurrent workload that rides through a server restart.

What a restart costs is counted in two kinds, the way the README states it:
the queries that were in flight when the server went down fail (the driver
reports the lost connection, and the pool replaces it), while the acquires
made during the outage wait and then succeed.  The summary says how many of
each there were.

The dashboard also shows what the pool's stats tell an operator: the
acquire wait's p50 and p99 (from ``stats().wait_histogram``) and the leases
reported as leaked (``leak_timeout``); ``--leak`` makes one task forget its
connection, to show the warning.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import AsyncPool, LeakInfo, PoolStats
from .._redact import one_line

__all__ = ["run_demo"]


@dataclass
class _Tally:
    cycles: int = 0
    #: error name -> count, for queries (on a leased connection) and acquires
    query_errors: dict[str, int] = field(default_factory=dict)
    acquire_errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    longest_wait: float = 0.0
    restarted_at: float | None = None
    #: error name -> the first message seen with it
    messages: dict[str, str] = field(default_factory=dict)
    leaks: list[LeakInfo] = field(default_factory=list)


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


async def _forgetful(pool: AsyncPool, stop: float) -> None:
    """A task that takes a connection and forgets it until the end (``--leak``)."""
    conn = await pool.acquire()
    try:
        await asyncio.sleep(max(0.0, stop - time.monotonic()))
    finally:
        await pool.release(conn)


async def _workload(pool: AsyncPool, driver: str, tally: _Tally, stop: float) -> None:
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        acquired = False
        try:
            async with pool.connection(timeout=10.0) as conn:
                acquired = True
                tally.longest_wait = max(tally.longest_wait, time.perf_counter() - t0)
                if driver == "asyncpg":
                    await conn.fetchval("SELECT pg_sleep(0.002)")
                else:
                    await conn.execute("SELECT pg_sleep(0.002)")
        except Exception as exc:
            errors = tally.query_errors if acquired else tally.acquire_errors
            name = type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
            tally.messages.setdefault(name, one_line(str(exc)))
            if not acquired:
                await asyncio.sleep(0.01)
            continue
        tally.latencies.append(time.perf_counter() - t0)
        tally.cycles += 1


def _table(pool: AsyncPool, tally: _Tally, elapsed: float) -> Any:
    from rich.table import Table

    s = pool.stats()
    waits = s.wait_histogram
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
        ("cycles done", f"{tally.cycles}", "queries failed", f"{sum(tally.query_errors.values())}"),
        (
            "longest wait",
            f"{tally.longest_wait * 1000:.0f} ms",
            "acquires failed",
            f"{sum(tally.acquire_errors.values())}",
        ),
        (
            "acquire p50/p99",
            f"{waits.quantile(0.5) * 1000:.1f}/{waits.quantile(0.99) * 1000:.1f} ms",
            "leaks",
            f"[bold red]{s.leaks}[/]" if s.leaks else "0",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    if tally.leaks:
        leak = tally.leaks[-1]
        table.caption = (
            f"leak: connection #{leak.connection} held {leak.age:.1f}s "
            f"(leak_timeout={leak.leak_timeout:g}s), acquired at {leak.acquirer}"
        )
        table.caption_style = "bold red"
    return table


async def _main(args: argparse.Namespace, dsn: str, cluster: Any) -> tuple[_Tally, PoolStats]:
    tally = _Tally()
    pool = AsyncPool(
        dsn,
        driver=args.driver,
        min_size=2,
        max_size=args.size,
        timeout=10.0,
        name="demo",
        leak_timeout=args.leak_timeout,
        on_leak=tally.leaks.append,
        housekeeping_interval=0.25,
        connect_kwargs={"autocommit": True} if args.driver == "psycopg" else None,
    )
    async with pool:
        start = time.monotonic()
        stop = start + args.seconds
        tasks = [asyncio.create_task(_workload(pool, args.driver, tally, stop))
                 for _ in range(args.tasks)]
        if args.leak:
            tasks.append(asyncio.create_task(_forgetful(pool, stop)))
        restart = cluster is not None and not args.no_restart
        restart_at = start + args.seconds / 3 if restart else None
        console: Any = None
        with contextlib.suppress(ImportError):  # rich is optional
            from rich.console import Console

            console = Console()
        # A live table only on a terminal; piped output gets a line a second
        # (a rich Live there draws once, at the end, with no final newline).
        live: Any = None
        if console is not None and console.is_terminal:
            from rich.live import Live

            live = Live(_table(pool, tally, 0.0), console=console, refresh_per_second=8)
        next_line = start + 1.0
        with live if live is not None else contextlib.nullcontext():
            while not all(t.done() for t in tasks):
                await asyncio.sleep(0.25)
                now = time.monotonic()
                if restart_at is not None and now >= restart_at:
                    restart_at = None
                    tally.restarted_at = now - start
                    await asyncio.to_thread(cluster.restart)
                if live is not None:
                    live.update(_table(pool, tally, now - start))
                elif now >= next_line:
                    next_line += 1.0
                    print(f"{now - start:5.1f}s {pool!r}", flush=True)
        await asyncio.gather(*tasks)
        if live is None and console is not None:
            console.print(_table(pool, tally, time.monotonic() - start))
        print(pool)
        stats = pool.stats()
    return tally, stats


class _ToStderr(logging.Handler):
    """Writes to ``sys.stderr`` as it is now: rich's live display swaps it for a
    stream that prints above the table, which a plain handler would bypass."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # pragma: no cover - as logging.StreamHandler does
            self.handleError(record)


def _print_errors(errors: dict[str, int], messages: dict[str, str]) -> None:
    for name, count in errors.items():
        text = messages[name]
        if len(text) > 100:
            text = text[:99] + "…"
        print(f"  {name} ({count}): {text}")


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the process exit code (1 if an acquire failed)."""
    # The pool logs its reconnect attempts while the server is down; say whose lines they are.
    handler = _ToStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("pgmarina")
    log.addHandler(handler)
    try:
        with _server(args.dsn) as (dsn, cluster):
            where = "embedded PostgreSQL" if cluster is not None else "the given server"
            print(f"pgmarina demo: {args.tasks} tasks on a pool of {args.size} ({args.driver}), "
                  f"{args.seconds:g}s on {where}", flush=True)
            tally, stats = asyncio.run(_main(args, dsn, cluster))
    finally:
        log.removeHandler(handler)
    acquires = stats.acquires
    lat = sorted(tally.latencies)
    if lat:
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        print(f"cycles: {tally.cycles} ({tally.cycles / args.seconds:.0f}/s), "
              f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1] * 1000:.0f} ms")
    waits = stats.wait_histogram
    print(f"acquire wait p50 {waits.quantile(0.5) * 1000:.2f} ms, "
          f"p99 {waits.quantile(0.99) * 1000:.2f} ms (the pool's histogram)")
    for leak in tally.leaks:
        print(f"leak: connection #{leak.connection} held {leak.age:.1f}s, "
              f"acquired at {leak.acquirer}")
    failed_queries = sum(tally.query_errors.values())
    if tally.restarted_at is not None:
        print(f"server restart at {tally.restarted_at:.1f}s: it cost {failed_queries} queries, "
              "the ones in flight on the connections it closed")
    elif failed_queries:
        print(f"queries failed: {failed_queries}")
    _print_errors(tally.query_errors, tally.messages)
    failed_acquires = sum(tally.acquire_errors.values())
    if failed_acquires:
        print(f"acquires: {acquires}, {failed_acquires} failed")
        _print_errors(tally.acquire_errors, tally.messages)
    else:
        print(f"acquires: {acquires}, all served (the longest waited "
              f"{tally.longest_wait * 1000:.0f} ms)")
    return 0 if tally.cycles and not failed_acquires else 1
