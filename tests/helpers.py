"""Small helpers shared by the test suites (imported as ``helpers``)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import psycopg
import pytest

from pgmarina import PoolError


async def eventually(predicate: Callable[[], Any], *, timeout: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` (sync or async) until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {what or predicate}")
        await asyncio.sleep(0.02)


def backend_pids(server: Any, app: str) -> set[int]:
    """The pids of ``server``'s backends whose ``application_name`` is ``app``.

    A test gives its pool's connections a name of their own to find them
    here, apart from every other test's on the shared server.
    """
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    return {int(r[0]) for r in rows}


def backends(server: Any, app: str) -> int:
    """How many of ``server``'s backends have the ``application_name`` ``app``."""
    return len(backend_pids(server, app))


@contextlib.asynccontextmanager
async def admin_of(server: Any) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to ``server``, outside any pool, closed after the block."""
    conn = await asyncpg.connect(**server.connect_kwargs(), timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


def refused_elsewhere(pool: Any, enter: Callable[[], Any], new_loop: Callable[[], Any]) -> None:
    """On a fresh loop from ``new_loop``, ``pool`` (opened on another loop) refuses
    ``async with enter()`` and ``await pool.acquire()`` with ``PoolError``."""

    async def both() -> None:
        with pytest.raises(PoolError, match="event loop"):
            async with enter():
                pass  # pragma: no cover - never entered
        with pytest.raises(PoolError, match="event loop"):
            await pool.acquire()

    loop = new_loop()
    try:
        loop.run_until_complete(both())
    finally:
        loop.close()
