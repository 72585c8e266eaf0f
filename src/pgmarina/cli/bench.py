"""``pgmarina bench``: pgmarina against the raw driver and the peer pools, in one run.

One cycle is what an application does most: take a connection, run
``SELECT 1``, give it back.  Each contender runs that cycle from ``--conc``
tasks for ``--seconds``; the contenders take turns in rounds, in a fresh
random order each round, and a ratio is taken within each round (see
:mod:`pgmarina.cli._rounds`), so that the machine's drift hits them all
alike.  Every contender's pool has ``--size`` connections.

The contenders are the ones whose packages are installed:

=================  ===================================================================
``raw-asyncpg``    ``--size`` asyncpg connections driven by ``--size`` tasks, whatever
                   ``--conc`` is: the most that many connections deliver (the ceiling)
``pgmarina``       :class:`~pgmarina.AsyncPool` on asyncpg
``asyncpg-pool``   ``asyncpg.create_pool``
``sqlalchemy``     SQLAlchemy's async engine on asyncpg (``QueuePool``)
``psqlpy``         psqlpy's ``ConnectionPool`` (a driver and pool in Rust)
``raw-psycopg``    as ``raw-asyncpg``, with ``psycopg.AsyncConnection``
``pgmarina-psycopg``  :class:`~pgmarina.AsyncPool` on psycopg 3 (autocommit)
``psycopg_pool``   ``psycopg_pool.AsyncConnectionPool`` (autocommit)
=================  ===================================================================

Ratios are to ``pgmarina`` on the same driver (``psqlpy`` and ``sqlalchemy``
to ``pgmarina``, on asyncpg).  The thread :class:`~pgmarina.Pool` has its
own script, ``bench/bench_sync.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._rounds import orders, percentile, ratios

__all__ = ["CONTENDERS", "add_bench_arguments", "run_bench"]

Cycle = Callable[[], Awaitable[Any]]
#: An async context manager that opens a contender and yields its cycle maker.
Setup = Callable[[str, int], contextlib.AbstractAsyncContextManager[Callable[[int], Cycle]]]


@dataclass(frozen=True)
class Contender:
    name: str
    needs: tuple[str, ...]  #: importable packages
    baseline: str  #: ratios are to this contender
    setup: Setup
    fixed_tasks: bool = False  #: runs ``size`` tasks whatever ``conc`` is


@contextlib.asynccontextmanager
async def _raw(dsn: str, size: int, driver: str) -> AsyncIterator[Callable[[int], Cycle]]:
    if driver == "asyncpg":
        import asyncpg

        conns: list[Any] = [await asyncpg.connect(dsn) for _ in range(size)]
    else:
        import psycopg

        conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(size)]

    def make(i: int) -> Cycle:
        conn = conns[i]
        if driver == "asyncpg":
            return lambda: conn.fetchval("SELECT 1")

        async def cycle() -> None:
            cur = await conn.execute("SELECT 1")
            await cur.fetchone()

        return cycle

    try:
        yield make
    finally:
        for c in conns:
            await c.close()


@contextlib.asynccontextmanager
async def _marina(dsn: str, size: int, driver: str) -> AsyncIterator[Callable[[int], Cycle]]:
    from .. import AsyncPool

    kwargs: dict[str, Any] = {"autocommit": True} if driver == "psycopg" else {}
    pool = AsyncPool(dsn, driver=driver, min_size=size, max_size=size, name="bench", **kwargs)
    await pool.open(wait=True)

    async def cycle_asyncpg() -> None:
        async with pool.connection() as conn:
            await conn.fetchval("SELECT 1")

    async def cycle_psycopg() -> None:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT 1")
            await cur.fetchone()

    cycle = cycle_asyncpg if driver == "asyncpg" else cycle_psycopg
    try:
        yield lambda i: cycle
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def _asyncpg_pool(dsn: str, size: int) -> AsyncIterator[Callable[[int], Cycle]]:
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size)

    async def cycle() -> None:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    try:
        yield lambda i: cycle
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def _psycopg_pool(dsn: str, size: int) -> AsyncIterator[Callable[[int], Cycle]]:
    import psycopg_pool

    pool = psycopg_pool.AsyncConnectionPool(
        dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False
    )
    await pool.open(wait=True)

    async def cycle() -> None:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT 1")
            await cur.fetchone()

    try:
        yield lambda i: cycle
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def _psqlpy(dsn: str, size: int) -> AsyncIterator[Callable[[int], Cycle]]:
    import psqlpy

    pool = psqlpy.ConnectionPool(dsn=dsn, max_db_pool_size=size)

    async def cycle() -> None:
        async with pool.acquire() as conn:
            await conn.fetch_val("SELECT 1")

    try:
        yield lambda i: cycle
    finally:
        pool.close()


@contextlib.asynccontextmanager
async def _sqlalchemy(dsn: str, size: int) -> AsyncIterator[Callable[[int], Cycle]]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    url = "postgresql+asyncpg://" + dsn.split("://", 1)[1]  # _server() gives a URI
    engine = create_async_engine(url, pool_size=size, max_overflow=0)
    query = text("SELECT 1")

    async def cycle() -> None:
        async with engine.connect() as conn:
            await conn.execute(query)

    try:
        # Warm the pool up to its size, as the other contenders are.
        conns = [await engine.connect() for _ in range(size)]
        for c in conns:
            await c.close()
        yield lambda i: cycle
    finally:
        await engine.dispose()


def _on(setup: Callable[..., Any], driver: str) -> Setup:
    return lambda dsn, size: setup(dsn, size, driver)


#: Every contender, in the order of the table.
CONTENDERS = (
    Contender("raw-asyncpg", ("asyncpg",), "pgmarina", _on(_raw, "asyncpg"), fixed_tasks=True),
    Contender("pgmarina", ("asyncpg",), "pgmarina", _on(_marina, "asyncpg")),
    Contender("asyncpg-pool", ("asyncpg",), "pgmarina", _asyncpg_pool),
    Contender("sqlalchemy", ("sqlalchemy", "greenlet", "asyncpg"), "pgmarina", _sqlalchemy),
    Contender("psqlpy", ("psqlpy", "asyncpg"), "pgmarina", _psqlpy),
    Contender("raw-psycopg", ("psycopg",), "pgmarina-psycopg", _on(_raw, "psycopg"),
              fixed_tasks=True),
    Contender("pgmarina-psycopg", ("psycopg",), "pgmarina-psycopg", _on(_marina, "psycopg")),
    Contender("psycopg_pool", ("psycopg", "psycopg_pool"), "pgmarina-psycopg", _psycopg_pool),
)


def installed(contender: Contender) -> bool:
    return all(importlib.util.find_spec(pkg) is not None for pkg in contender.needs)


@dataclass
class _Result:
    ops: list[float] = field(default_factory=list)  #: ops/s, one per round
    latencies: list[float] = field(default_factory=list)  #: seconds, every cycle


async def _run_once(make: Callable[[int], Cycle], tasks: int, seconds: float,
                    latencies: list[float]) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * tasks

    async def worker(i: int) -> None:
        cycle = make(i)
        clock = time.perf_counter
        n = 0
        keep = latencies.append
        while True:
            t0 = clock()
            if t0 >= stop:
                break
            await cycle()
            keep(clock() - t0)
            n += 1
        counts[i] = n

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    return sum(counts) / (time.perf_counter() - t0)


async def _bench(args: argparse.Namespace, dsn: str, chosen: list[Contender],
                 advance: Callable[[str], None]) -> dict[int, dict[str, _Result]]:
    out: dict[int, dict[str, _Result]] = {}
    for conc in args.conc:
        results = {c.name: _Result() for c in chosen}
        async with contextlib.AsyncExitStack() as stack:
            makers = {c.name: await stack.enter_async_context(c.setup(dsn, args.size))
                      for c in chosen}
            by_name = {c.name: c for c in chosen}
            for order in orders([c.name for c in chosen], args.rounds):
                for name in order:
                    advance(f"conc {conc}: {name}")
                    tasks = args.size if by_name[name].fixed_tasks else conc
                    r = results[name]
                    r.ops.append(await _run_once(makers[name], tasks, args.seconds, r.latencies))
        out[conc] = results
    return out


def _summary(results: dict[int, dict[str, _Result]],
             chosen: list[Contender]) -> list[dict[str, Any]]:
    rows = []
    for conc, by_name in results.items():
        for c in chosen:
            r = by_name[c.name]
            lat = sorted(r.latencies)
            row: dict[str, Any] = {
                "conc": conc,
                "contender": c.name,
                "tasks": None,
                "ops_per_s": statistics.median(r.ops),
                "p50_ms": percentile(lat, 0.50) * 1000,
                "p99_ms": percentile(lat, 0.99) * 1000,
                "baseline": c.baseline if c.baseline in by_name else None,
            }
            if row["baseline"]:
                q1, q2, q3 = ratios(r.ops, by_name[c.baseline].ops)
                row.update(ratio=q2, ratio_q1=q1, ratio_q3=q3)
            rows.append(row)
    return rows


def _table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"SELECT 1 cycles, pools of {args.size}, {args.rounds} rounds "
                        f"of {args.seconds:g}s (median ops/s; ratio: median of per-round "
                        "ratios [middle half])"))
    for col in ("conc", "contender", "ops/s", "p50 ms", "p99 ms", "vs"):
        table.add_column(col, justify="left" if col in ("contender", "vs") else "right")
    for row in rows:
        vs = ""
        if row["baseline"] and row["baseline"] != row["contender"]:
            vs = (f"{row['ratio']:.2f}x {row['baseline']} "
                  f"[{row['ratio_q1']:.2f}-{row['ratio_q3']:.2f}]")
        table.add_row(str(row["conc"]), row["contender"], f"{row['ops_per_s']:.0f}",
                      f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}", vs)
    Console(width=max(100, Console().width)).print(table)


#: The plot's widest figure, in inches at :data:`_PLOT_DPI` (1600 px): a page or a
#: screen shows it whole, however many contenders ran.
_PLOT_MAX_WIDTH = 16.0
_PLOT_DPI = 100


def _plot(rows: list[dict[str, Any]], path: str) -> None:
    """Draw ``rows`` as one panel per driver (the contenders that share a baseline).

    Each panel groups its bars by concurrency, one bar per contender, with the
    ratio to the baseline written on it: comparisons are within a driver, so
    panels keep pools of different drivers apart and each panel's scale its own.
    The figure is sized by its bars and capped at 1600 px wide.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concs = sorted({r["conc"] for r in rows})
    families: dict[str, list[str]] = {}
    for r in rows:
        names = families.setdefault(r["baseline"] or r["contender"], [])
        if r["contender"] not in names:
            names.append(r["contender"])
    bars = [len(names) * len(concs) for names in families.values()]
    width = min(_PLOT_MAX_WIDTH, max(6.5, 1.2 + 0.42 * sum(bars) + 0.6 * len(bars)))
    fig, axes = plt.subplots(1, len(families), figsize=(width, 4.8), squeeze=False,
                             gridspec_kw={"width_ratios": bars})
    by_key = {(r["conc"], r["contender"]): r for r in rows}
    ceilings = {c.name for c in CONTENDERS if c.fixed_tasks}
    for ax, (baseline, names) in zip(axes[0], families.items(), strict=True):
        step = 0.8 / len(names)
        for k, name in enumerate(names):
            found = [by_key.get((c, name)) for c in concs]
            xs = [i + (k - (len(names) - 1) / 2) * step for i in range(len(concs))]
            values = [r["ops_per_s"] if r else 0.0 for r in found]
            # A raw contender runs a fixed number of tasks: a ceiling, not a peer.
            label = f"{name} (ceiling)" if name in ceilings else name
            drawn = ax.bar(xs, values, step * 0.92, label=label,
                           hatch="//" if name in ceilings else None)
            labels = [f"{r['ratio']:.2f}x" if r and r.get("ratio") is not None
                      and name != baseline else "" for r in found]
            ax.bar_label(drawn, labels, fontsize=7, padding=2)
        ax.set_xticks(range(len(concs)))
        ax.set_xticklabels([f"{c} task{'s' if c != 1 else ''}" for c in concs])
        ax.set_title(f"ratios to {baseline}", fontsize="medium")
        ax.margins(y=0.18)  # room for the ratios above the tallest bar
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1),
                  ncol=min(3, len(names)), frameon=False)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0][0].set_ylabel("SELECT 1 cycles per second (median)")
    fig.suptitle("pgmarina bench, one panel per driver",
                 fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=_PLOT_DPI)
    plt.close(fig)


@contextlib.contextmanager
def _progress(total: int, quiet: bool) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on stderr; one step per contender-round."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    if quiet:
        yield lambda what: None
        return
    columns = (TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("starting", total=total)
        done = [0]

        def advance(what: str) -> None:
            if done[0]:
                bar.advance(task)
            done[0] += 1
            bar.update(task, description=what)

        yield advance


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every count must be >= 1: {text!r}")
    return values


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(c.name for c in CONTENDERS)
    parser.add_argument("--dsn", help="benchmark this server, a URI or key=value DSN "
                        "(default: a throwaway embedded PostgreSQL); the password is never "
                        "printed")
    parser.add_argument("--conc", type=_int_list, default=[1, 10, 100],
                        help="concurrent tasks, comma-separated (default 1,10,100)")
    parser.add_argument("--size", type=int, default=10, help="every pool's size (default 10)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="length of one contender's turn (default 1)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds; each runs every contender once (default 5)")
    parser.add_argument("--only", type=lambda s: s.split(","),
                        help=f"comma-separated contenders to run (of: {names})")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON instead of a table")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw ops/s as a bar chart (needs pgmarina[plot])")


def run_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``pgmarina bench``; returns the exit code."""
    if args.size < 1 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--size and --rounds must be >= 1 and --seconds > 0")
    known = {c.name: c for c in CONTENDERS}
    if args.only:
        unknown = [n for n in args.only if n not in known]
        if unknown:
            parser.error(f"--only: unknown contender(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(known)}")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'pgmarina[plot]'")
    wanted = [c for c in CONTENDERS if not args.only or c.name in args.only]
    chosen = [c for c in wanted if installed(c)]
    missing = [c.name for c in wanted if c not in chosen]
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}", file=sys.stderr)
    if not chosen:
        print("pgmarina bench: no contender to run", file=sys.stderr)
        return 1
    total = len(args.conc) * args.rounds * len(chosen)
    if args.dsn:
        try:
            as_uri(args.dsn)
        except ValueError as exc:
            parser.error(f"--{exc}")
    with _server(args.dsn) as (dsn, where):
        print(f"pgmarina bench: {len(chosen)} contenders on {where}, conc "
              f"{','.join(map(str, args.conc))}, {args.rounds} rounds of {args.seconds:g}s",
              file=sys.stderr, flush=True)
        with _progress(total, quiet=False) as advance:
            results = asyncio.run(_bench(args, dsn, chosen, advance))
    rows = _summary(results, chosen)
    for row in rows:
        c = known[row["contender"]]
        row["tasks"] = args.size if c.fixed_tasks else row["conc"]
    if args.plot:
        _plot(rows, args.plot)
    if args.json:
        json.dump({"size": args.size, "rounds": args.rounds, "seconds": args.seconds,
                   "skipped": missing, "results": rows}, sys.stdout, indent=2)
        print()
    else:
        _table(rows, args)
    if args.plot:
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def as_uri(dsn: str) -> str:
    """``dsn`` as a ``postgresql://`` URI: asyncpg, psqlpy and SQLAlchemy take
    only that form, libpq takes both.

    Raises:
        ValueError: libpq cannot read ``dsn`` (the message has no password).
    """
    if "://" in dsn:
        return dsn
    from urllib.parse import quote, urlencode

    from .check import split_hosts

    hosts, params = split_hosts(dsn)
    auth = quote(str(params.pop("user", "")), safe="")
    if "password" in params:
        auth += ":" + quote(str(params.pop("password")), safe="")
    where = ",".join(f"{'[' + h + ']' if ':' in h else quote(h, safe='')}:{p}"
                     for h, p in hosts)
    db = quote(str(params.pop("dbname", "")), safe="")
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{auth}{'@' if auth else ''}{where}/{db}{query}"


@contextlib.contextmanager
def _server(dsn: str | None) -> Iterator[tuple[str, str]]:
    if dsn:
        from .._redact import redact

        yield as_uri(dsn), redact(as_uri(dsn))
        return
    from ..contrib import embedded

    cluster = embedded.Cluster()
    cluster.start()
    try:
        yield cluster.dsn, "a throwaway embedded PostgreSQL"
    finally:
        cluster.destroy()
