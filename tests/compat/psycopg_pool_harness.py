"""One object per side (sync or async) of the psycopg_pool façade, so each test is written once.

A test body is ``async def body(side, ...)``: for the async side the methods await the
façade pool directly; for the sync side they run the blocking call in a worker thread
(``asyncio.to_thread`` on a 64-thread executor), so "hold a connection in one task while
another waits" reads the same for both.  :func:`run` runs a body with ``asyncio.run`` and
closes every pool it made afterwards, even when the body failed.

Test bodies use a connection through :class:`Conn`, whose ``execute``/``value``/``commit``
are awaitables on both sides; :meth:`Side.hook` makes the callbacks (``configure``,
``check``, ``reset``) in the style of the side's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from helpers import eventually
from pgmarina.compat import psycopg_pool as facade

log = logging.getLogger("compat-tests")

SIDES = ["sync", "async"]

#: Decorator: run the test once per side, with ``kind`` = ``"sync"`` / ``"async"``.
sides = pytest.mark.parametrize("kind", SIDES)


def unique(prefix: str = "ppf") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class Unhealthy(Exception):
    """Raised on purpose by a test hook."""


class Conn:
    """A façade connection with awaitable IO on both sides (for hooks and test bodies)."""

    def __init__(self, raw: Any, is_async: bool) -> None:
        self.raw = raw
        self.is_async = is_async

    async def execute(self, sql: str, params: Any = None) -> None:
        if self.is_async:
            await self.raw.execute(sql, params)
        else:
            await asyncio.to_thread(self.raw.execute, sql, params)

    async def value(self, sql: str, params: Any = None) -> Any:
        if self.is_async:
            cur = await self.raw.execute(sql, params)
            row = await cur.fetchone()
        else:
            row = await asyncio.to_thread(lambda: self.raw.execute(sql, params).fetchone())
        assert row is not None
        return row[0]

    async def commit(self) -> None:
        if self.is_async:
            await self.raw.commit()
        else:
            await asyncio.to_thread(self.raw.commit)

    async def close(self) -> None:
        if self.is_async:
            await self.raw.close()
        else:
            await asyncio.to_thread(self.raw.close)

    @property
    def pid(self) -> int:
        return int(self.raw.info.backend_pid)

    @property
    def status(self) -> str:
        return str(self.raw.info.transaction_status.name)


class Side:
    """How one side (sync or async façade) does each thing a test needs."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.is_async = kind == "async"
        self.pools: list[Any] = []
        self.admins: list[psycopg.AsyncConnection[Any]] = []

    def __repr__(self) -> str:
        return f"<Side {self.kind}>"

    # -- classes ---------------------------------------------------------------------------

    def cls(self, null: bool = False) -> type[Any]:
        if self.is_async:
            return facade.AsyncNullConnectionPool if null else facade.AsyncConnectionPool
        return facade.NullConnectionPool if null else facade.ConnectionPool

    @property
    def connection_class(self) -> type[Any]:
        return psycopg.AsyncConnection if self.is_async else psycopg.Connection

    # -- pools -----------------------------------------------------------------------------

    def make(self, dsn: str, *, null: bool = False, **kwargs: Any) -> Any:
        """A pool, not opened unless ``open=True`` is passed (must run on the test's loop)."""
        kwargs.setdefault("open", False)
        pool = self.cls(null)(dsn, **kwargs)
        self.pools.append(pool)
        return pool

    async def opened(self, dsn: str, *, null: bool = False, wait: bool = True,
                     **kwargs: Any) -> Any:
        """A pool opened (and filled unless ``wait=False``) the explicit way."""
        pool = self.make(dsn, null=null, **kwargs)
        await self.call(pool.open, wait=wait, timeout=10)
        return pool

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(...)`` (async side) or run it in a worker thread (sync side)."""
        if self.is_async:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        return await asyncio.to_thread(fn, *args, **kwargs)

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Task[Any]:
        return asyncio.ensure_future(self.call(fn, *args, **kwargs))

    async def getconn(self, pool: Any, timeout: float | None = None) -> Conn:
        return Conn(await self.call(pool.getconn, timeout), self.is_async)

    async def putconn(self, pool: Any, conn: Conn | Any) -> None:
        await self.call(pool.putconn, conn.raw if isinstance(conn, Conn) else conn)

    @contextlib.asynccontextmanager
    async def connection(self, pool: Any, timeout: float | None = None) -> AsyncIterator[Conn]:
        """``pool.connection()`` as an async context manager on both sides."""
        if self.is_async:
            async with pool.connection(timeout) as raw:
                yield Conn(raw, True)
            return
        cm = pool.connection(timeout)
        raw = await asyncio.to_thread(cm.__enter__)
        try:
            yield Conn(raw, False)
        except BaseException as exc:
            if not await asyncio.to_thread(cm.__exit__, type(exc), exc, exc.__traceback__):
                raise
        else:
            await asyncio.to_thread(cm.__exit__, None, None, None)

    @contextlib.asynccontextmanager
    async def entered(self, pool: Any) -> AsyncIterator[Any]:
        """``with pool`` / ``async with pool``."""
        if self.is_async:
            async with pool as entered:
                yield entered
            return
        entered = await asyncio.to_thread(pool.__enter__)
        try:
            yield entered
        finally:
            await asyncio.to_thread(pool.__exit__, None, None, None)

    def hook(
        self,
        calls: list[Any] | None = None,
        *,
        sql: str | None = None,
        commit: bool = False,
        fail_first: int = 0,
        fail: bool = False,
    ) -> Callable[[Any], Any]:
        """A callback (``configure``, ``check``, ``reset``) in this side's style: a plain
        function for the thread pools, a coroutine function for the asyncio ones.

        It records the connection it was given in ``calls``, raises :class:`Unhealthy`
        on its first ``fail_first`` calls (every call if ``fail``), and otherwise runs
        ``sql`` and, if ``commit``, commits.
        """
        calls = [] if calls is None else calls

        def enter(raw: Any) -> None:
            calls.append(raw)
            if fail or len(calls) <= fail_first:
                raise Unhealthy(f"hook call {len(calls)} fails on purpose")

        if self.is_async:

            async def async_hook(raw: Any) -> None:
                enter(raw)
                if sql is not None:
                    await raw.execute(sql)
                if commit:
                    await raw.commit()

            return async_hook

        def sync_hook(raw: Any) -> None:
            enter(raw)
            if sql is not None:
                raw.execute(sql)
            if commit:
                raw.commit()

        return sync_hook

    async def admin(self, server: Any) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(server.dsn, autocommit=True)
        self.admins.append(conn)
        return conn

    async def cleanup(self) -> None:
        for pool in reversed(self.pools):
            try:
                await asyncio.wait_for(self.call(pool.close, timeout=1.0), 15)
            except Exception:
                log.exception("closing %r after the test", pool)
            # Connections still out when the test ended: drop them.
            for lease in list(pool._leases.values()):
                with contextlib.suppress(Exception):
                    lease._con.pgconn.finish()
        for conn in self.admins:
            with contextlib.suppress(Exception):
                await conn.close()


def run(kind: str, body: Callable[[Side], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``body(side)`` on a fresh loop with a roomy executor; clean up after."""

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(64, thread_name_prefix="ppf"))
        side = Side(kind)
        try:
            return await body(side)
        finally:
            await side.cleanup()

    return asyncio.run(main())


def each_side(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., None]:
    """``async def test_x(side, ...)`` becomes a test run once per side (``kind``)."""

    @sides
    @functools.wraps(fn)
    def test(kind: str, *args: Any, **kwargs: Any) -> None:
        run(kind, lambda side: fn(side, *args, **kwargs))

    # pytest reads the signature: ``kind`` instead of ``side``, the fixtures as they were.
    params = [p for name, p in inspect.signature(fn).parameters.items() if name != "side"]
    test.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("kind", inspect.Parameter.POSITIONAL_OR_KEYWORD), *params]
    )
    return test


async def backend_alive(admin: psycopg.AsyncConnection[Any], pid: int) -> bool:
    cur = await admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
    row = await cur.fetchone()
    return bool(row and row[0])


async def terminate(admin: psycopg.AsyncConnection[Any], pid: int) -> None:
    await admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    await eventually(lambda: _gone(admin, pid), what=f"backend {pid} gone")


async def _gone(admin: psycopg.AsyncConnection[Any], pid: int) -> bool:
    return not await backend_alive(admin, pid)
