"""The ``pgmarina`` command (also ``python -m pgmarina``).

``pgmarina server`` starts a throwaway PostgreSQL to try things on and prints
its DSN.  ``pgmarina demo`` starts one too (unless ``--dsn`` names a server),
runs a concurrent workload through an :class:`~pgmarina.AsyncPool`, restarts
the server in the middle of it, and shows what that cost: the queries that
were in flight, while every acquire waited and then succeeded.
``pgmarina bench`` measures pgmarina against the raw driver and the peer
pools that are installed; ``pgmarina check DSN`` says whether each host of
a DSN can serve a pool.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pgmarina`` console script."""
    from .. import __version__
    from ..contrib.embedded import SERVER_DESCRIPTION, add_server_arguments

    parser = argparse.ArgumentParser(
        prog="pgmarina", description="pgmarina: a PostgreSQL connection pool; tools to try it"
    )
    parser.add_argument("--version", action="version", version=f"pgmarina {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    server = sub.add_parser(
        "server",
        help="start a throwaway PostgreSQL and print its DSN",
        description=SERVER_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_server_arguments(server)
    demo = sub.add_parser(
        "demo",
        help="run a live workload, with a server restart in the middle",
        description="Run a concurrent workload through an AsyncPool on a throwaway PostgreSQL "
        "(or --dsn), restart the server a third of the way in, and show what the restart "
        "cost: the queries in flight fail, acquires wait and then succeed.",
    )
    demo.add_argument("--dsn", help="use this server instead of an embedded one (no restart)")
    demo.add_argument(
        "--driver",
        choices=["asyncpg", "psycopg"],
        default="asyncpg",
        help="the driver under the pool (default asyncpg; psycopg runs in autocommit)",
    )
    demo.add_argument("--tasks", type=int, default=50, help="concurrent tasks (default 50)")
    demo.add_argument("--size", type=int, default=10, help="pool max_size (default 10)")
    demo.add_argument("--seconds", type=float, default=6.0, help="workload length (default 6)")
    demo.add_argument(
        "--no-restart", action="store_true", help="do not restart the server mid-run"
    )
    demo.add_argument(
        "--leak-timeout", type=float, default=5.0,
        help="report a connection held longer than this as a leak (default 5)",
    )
    demo.add_argument(
        "--leak", action="store_true",
        help="one task forgets to give its connection back, to show the leak warning",
    )
    from .bench import add_bench_arguments
    from .check import add_check_arguments

    bench = sub.add_parser(
        "bench",
        help="pgmarina against the raw driver and the installed peer pools",
        description="Run acquire / SELECT 1 / release cycles through pgmarina, the raw "
        "drivers and every installed peer pool (asyncpg's pool, psycopg_pool, psqlpy, "
        "SQLAlchemy), in interleaved rounds in one run, and print ops/s, p99 and ratios. "
        "A throwaway embedded PostgreSQL is used unless --dsn names a server.",
    )
    add_bench_arguments(bench)
    check = sub.add_parser(
        "check",
        help="can this DSN serve a pool? (each host: reachable, role, usage, TLS, PgBouncer)",
        description="Connect to each host of DSN (multi-host DSNs such as "
        "postgresql://u@h1:5432,h2:5433/db are checked host by host) and report whether it "
        "is reachable and how fast, its server version and role (primary or standby), "
        "max_connections and current usage, whether TLS is in use and whether it looks "
        "like PgBouncer. Exits 1 when no host can serve a read-write pool. Passwords are "
        "never printed.",
    )
    add_check_arguments(check)
    args = parser.parse_args(argv)
    if args.command == "bench":
        from .bench import run_bench

        return run_bench(args, bench)
    if args.command == "check":
        from .check import run_check

        return run_check(args)
    if args.command == "server":
        from ..contrib.embedded import serve

        return serve(args)
    if args.tasks < 1 or args.size < 1 or args.seconds <= 0 or not args.leak_timeout > 0:
        demo.error("--tasks and --size must be >= 1, --seconds and --leak-timeout > 0")
    from .demo import run_demo

    return run_demo(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
