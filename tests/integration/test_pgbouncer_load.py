"""The Scale-out issue's PgBouncer load test: many callers, each running parameterized queries
through a real PgBouncer in transaction pooling mode, with every driver and shell.

With ``pgbouncer=True`` none of them fails.  Without it, asyncpg's statement cache and
psycopg's automatic preparation (after 5 runs of a query on a connection) leave named
prepared statements in one server session, and the next transaction, run in another one by
the bouncer, does not find them, or finds another client's statement of the same name and
runs it, answering with the wrong query's result: the failures the switch prevents.
psycopg2 never prepares, and needs no switch.

The bouncer (``bouncerbed``) shares 4 server connections among the pool's 20, so nearly
every transaction lands in another server session than the one before.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from typing import Any

import pytest

from bouncerbed import Bouncer
from pgmarina import AsyncPool, Pool

pytestmark = pytest.mark.slow

TASKS = 50
QUERIES = 1000
#: Enough to show the failure without the switch, which shows from the second lease on.
QUERIES_UNSAFE = 100
POOL_SIZE = 20

#: What a statement prepared in one server session and used (or made again) in another gives.
STATEMENT_LOST = re.compile(r'prepared statement "[^"]+" (does not exist|already exists)')
#: The kind counted for a query answered with another query's result.
WRONG_RESULT = "wrong result"

COMBOS = [
    pytest.param("async", "asyncpg", id="asyncpg-AsyncPool"),
    pytest.param("async", "psycopg", id="psycopg-AsyncPool"),
    pytest.param("thread", "psycopg", id="psycopg-Pool"),
    pytest.param("thread", "psycopg2", id="psycopg2-Pool"),
]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


async def _async_load(dsn: str, driver: str, pgbouncer: bool, queries: int) -> Counter[str]:
    """Run the load on an ``AsyncPool``; the errors met, counted by kind."""
    errors: Counter[str] = Counter()
    if driver == "asyncpg":
        add, concat = "SELECT $1::int + 1", "SELECT $1::text || 'x'"
    else:
        add, concat = "SELECT %s::int + 1", "SELECT %s::text || 'x'"

    async with AsyncPool(
        dsn, driver=driver, pgbouncer=pgbouncer, min_size=0, max_size=POOL_SIZE, timeout=60
    ) as pool:

        async def one(k: int) -> Any:
            async with pool.connection() as conn:
                query, arg = (add, k) if k % 2 else (concat, str(k))
                if driver == "asyncpg":
                    return await conn.fetchval(query, arg)
                row = await (await conn.execute(query, (arg,))).fetchone()
                return row[0]

        async def task() -> None:
            for k in range(queries):
                try:
                    got = await one(k)
                except Exception as exc:
                    errors[_describe(exc)] += 1
                else:
                    if got != (k + 1 if k % 2 else f"{k}x"):
                        errors[WRONG_RESULT] += 1

        await asyncio.gather(*(task() for _ in range(TASKS)))
    return errors


def _thread_load(dsn: str, driver: str, pgbouncer: bool, queries: int) -> Counter[str]:
    """Run the load on a thread ``Pool``, one thread per task; the errors met, by kind."""
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    add, concat = "SELECT %s::int + 1", "SELECT %s::text || 'x'"

    with Pool(
        dsn, driver=driver, pgbouncer=pgbouncer, min_size=0, max_size=POOL_SIZE, timeout=60
    ) as pool:

        def task() -> None:
            for k in range(queries):
                query, arg = (add, k) if k % 2 else (concat, str(k))
                try:
                    with pool.connection() as conn:
                        cur = conn.cursor()
                        cur.execute(query, (arg,))
                        got = cur.fetchone()[0]
                        cur.close()
                except Exception as exc:
                    with lock:
                        errors[_describe(exc)] += 1
                else:
                    if got != (k + 1 if k % 2 else f"{k}x"):
                        with lock:
                            errors[WRONG_RESULT] += 1

        threads = [threading.Thread(target=task) for _ in range(TASKS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return errors


def _load(shell: str, dsn: str, driver: str, pgbouncer: bool, queries: int) -> Counter[str]:
    if shell == "async":
        return asyncio.run(_async_load(dsn, driver, pgbouncer, queries))
    return _thread_load(dsn, driver, pgbouncer, queries)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("shell", "driver"), COMBOS)
def test_fifty_callers_run_a_thousand_parameterized_queries_each_through_pgbouncer_with_no_error(
    pgbouncer: Bouncer, shell: str, driver: str
) -> None:
    errors = _load(shell, pgbouncer.dsn, driver, True, QUERIES)
    assert not errors, f"{sum(errors.values())} errors: {errors.most_common(5)}"


@pytest.mark.parametrize(
    ("shell", "driver"), [c for c in COMBOS if c.values[1] != "psycopg2"]
)
def test_without_the_switch_named_prepared_statements_are_lost_between_transactions(
    pgbouncer: Bouncer, shell: str, driver: str
) -> None:
    """The failure ``pgbouncer=True`` prevents: a statement the driver prepared by name in
    one transaction's server session is missing from the next one's.

    Where another client made a statement of the same name in that session, the query runs
    that one instead: it answers with the other query's result, or fails on parameters of
    the wrong type; those are counted too but not required, being a matter of timing.
    """
    errors = _load(shell, pgbouncer.dsn, driver, False, QUERIES_UNSAFE)
    lost = sum(n for kind, n in errors.items() if STATEMENT_LOST.search(kind))
    assert lost, f"no lost prepared statement without pgbouncer=True: {errors.most_common(5)}"


def test_psycopg2_needs_no_switch_since_it_never_prepares(pgbouncer: Bouncer) -> None:
    """psycopg2 sends its queries with the parameters interpolated: behind a
    transaction-mode bouncer it is safe without ``pgbouncer=True``."""
    errors = _load("thread", pgbouncer.dsn, "psycopg2", False, QUERIES)
    assert not errors, f"{sum(errors.values())} errors: {errors.most_common(5)}"
