"""Each adapter's local status reads agree with the server-side truth.

``quick_status`` is the C-level read the release path takes first: it must be
0 exactly when ``status`` says CLEAN, in every state a connection comes back
in: idle, inside a transaction, in a failed transaction, closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import psycopg2
import pytest

from pgmarina.adapters import BROKEN, CLEAN, IN_TRANSACTION
from pgmarina.adapters.psycopg import AsyncPsycopgAdapter, PsycopgAdapter
from pgmarina.adapters.psycopg2 import Psycopg2Adapter


def _states_sync(connect: Any, run: Any) -> list[tuple[str, Any]]:
    """(label, connection) pairs, one per state, for a sync driver."""
    idle = connect()
    in_tx = connect()
    run(in_tx, "SELECT 1")
    failed = connect()
    with pytest.raises(Exception):  # noqa: B017 - any driver error puts it in INERROR
        run(failed, "SELECT 1/0")
    closed = connect()
    closed.close()
    return [("idle", idle), ("in_tx", in_tx), ("failed", failed), ("closed", closed)]


EXPECTED = {"idle": CLEAN, "in_tx": IN_TRANSACTION, "failed": IN_TRANSACTION, "closed": BROKEN}


def _psycopg_run(conn: Any, sql: str) -> None:
    conn.execute(sql)


def _psycopg2_run(conn: Any, sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sync_adapters_quick_status_is_zero_exactly_when_clean(driver: str, pg: Any) -> None:
    if driver == "psycopg":
        adapter: Any = PsycopgAdapter()
        states = _states_sync(lambda: psycopg.connect(pg.dsn), _psycopg_run)
    else:
        adapter = Psycopg2Adapter()
        states = _states_sync(lambda: psycopg2.connect(pg.dsn), _psycopg2_run)
    try:
        for label, conn in states:
            assert adapter.status(conn) == EXPECTED[label], label
            assert (adapter.quick_status(conn) == CLEAN) == (EXPECTED[label] == CLEAN), label
    finally:
        for _, conn in states:
            conn.close()


def test_async_psycopg_quick_status_is_zero_exactly_when_clean(pg: Any) -> None:
    adapter = AsyncPsycopgAdapter()

    async def body() -> None:
        idle = await psycopg.AsyncConnection.connect(pg.dsn)
        in_tx = await psycopg.AsyncConnection.connect(pg.dsn)
        await in_tx.execute("SELECT 1")
        failed = await psycopg.AsyncConnection.connect(pg.dsn)
        with pytest.raises(psycopg.errors.DivisionByZero):
            await failed.execute("SELECT 1/0")
        closed = await psycopg.AsyncConnection.connect(pg.dsn)
        await closed.close()
        states = {"idle": idle, "in_tx": in_tx, "failed": failed, "closed": closed}
        try:
            for label, conn in states.items():
                assert adapter.status(conn) == EXPECTED[label], label
                quick_clean = adapter.quick_status(conn) == CLEAN
                assert quick_clean == (EXPECTED[label] == CLEAN), label
        finally:
            for conn in states.values():
                await conn.close()

    asyncio.run(body())
