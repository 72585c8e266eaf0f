"""One object per (driver, pool class) pair, so each conformance test is written once.

The four pairs are asyncpg and psycopg 3 under :class:`~pgmarina.AsyncPool`, and psycopg 3
and psycopg2 under the thread :class:`~pgmarina.Pool`.  Every test body is an ``async``
function that talks to the pool only through a :class:`Combo`: for the async pairs the
methods await the pool directly, for the thread pairs they run the blocking call in a worker
thread (``asyncio.to_thread``), so "hold a connection in one task while another waits" reads
the same for all four.

:func:`run_async` turns ``async def test_x(combo, pg)`` into a plain pytest function that runs
the body with ``asyncio.run`` (no pytest-asyncio), on a loop whose default executor has enough
threads for tests that park many sync waiters at once.  Pools made through
:meth:`Combo.make_pool` and admin connections made through :meth:`Combo.admin` are closed
afterwards even when the test fails, so no connection is left for the garbage collector (which
would warn, and warnings are errors here).

The admin connection is a separate asyncpg connection on the test's event loop; it looks at
``pg_stat_activity`` and terminates backends, independently of the pool under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import asyncpg
import psycopg
import psycopg2
import psycopg2.extensions

from helpers import eventually
from pgmarina import AsyncPool, Pool, PoolTimeout

__all__ = [
    "COMBOS",
    "Admin",
    "Combo",
    "Interrupted",
    "Unhealthy",
    "dsn_via",
    "eventually",
    "run_async",
    "unique",
]

log = logging.getLogger("conformance")

_UNSET: Any = object()


def dsn_via(server: Any, proxy: Any) -> str:
    """A URI DSN for ``server`` that goes through ``proxy`` (every driver takes URIs)."""
    auth = quote(server.user, safe="")
    if server.password is not None:
        auth += ":" + quote(server.password, safe="")
    return f"postgresql://{auth}@{proxy.host}:{proxy.port}/{quote(server.dbname, safe='')}"


def unique(prefix: str = "pgm") -> str:
    """A name no other test uses (roles, tables, application names)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"




class Unhealthy(Exception):
    """Raised on purpose by a test hook."""


class Interrupted(BaseException):
    """Stands for an interruption (like KeyboardInterrupt) inside a sync borrower's block."""


class Admin:
    """A side channel to the server, independent of the pool under test."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def pids(self, app: str) -> set[int]:
        """Backends whose application_name is ``app``."""
        rows = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app
        )
        return {r["pid"] for r in rows}

    async def wait_backends(self, app: str, n: int, timeout: float = 5.0) -> None:
        """Wait until exactly ``n`` backends carry application_name ``app``."""

        async def count_is_n() -> bool:
            return len(await self.pids(app)) == n

        await eventually(count_is_n, timeout=timeout, what=f"{n} backends of {app}")

    async def alive(self, pid: int) -> bool:
        sql = "SELECT EXISTS(SELECT 1 FROM pg_stat_activity WHERE pid = $1)"
        return bool(await self.conn.fetchval(sql, pid))

    async def terminate(self, pid: int) -> None:
        """``pg_terminate_backend`` and wait (up to 5 s) until the backend is gone."""
        assert await self.conn.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
        await eventually(lambda: self._gone(pid), what=f"backend {pid} exits")

    async def _gone(self, pid: int) -> bool:
        return not await self.alive(pid)

    async def wait_gone(self, pid: int, timeout: float = 5.0) -> None:
        await eventually(lambda: self._gone(pid), timeout=timeout, what=f"backend {pid} gone")

    async def wait_running(self, pid: int, fragment: str, timeout: float = 5.0) -> None:
        """Wait until backend ``pid`` is executing a query containing ``fragment``."""

        async def running() -> bool:
            query = await self.conn.fetchval(
                "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid
            )
            return query is not None and fragment in query

        await eventually(running, timeout=timeout, what=f"backend {pid} runs {fragment!r}")

    async def execute(self, sql: str, *args: Any) -> Any:
        return await self.conn.execute(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)


class Combo:
    """How one (driver, pool class) pair does each thing a conformance test needs."""

    def __init__(self, driver: str, pool_class: type[AsyncPool] | type[Pool]) -> None:
        self.driver = driver
        self.pool_class = pool_class
        self.is_async = pool_class is AsyncPool
        self.id = f"{driver}-{pool_class.__name__}"
        #: ``pool.connection()`` commits on success / rolls back on error.
        self.transactional = driver != "asyncpg"
        self._pools: list[Any] = []
        self._apps: dict[int, str] = {}
        self._admins: list[asyncpg.Connection] = []

    def fresh(self) -> Combo:
        return Combo(self.driver, self.pool_class)

    def __repr__(self) -> str:
        return f"<Combo {self.id}>"

    # -- running a test ----------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        async def main() -> Any:
            loop = asyncio.get_running_loop()
            loop.set_default_executor(ThreadPoolExecutor(64, thread_name_prefix="conformance"))
            try:
                return await coro
            finally:
                try:
                    await self._cleanup()
                finally:
                    self._pools.clear()
                    self._apps.clear()
                    self._admins.clear()

        return asyncio.run(main())

    async def _cleanup(self) -> None:
        for pool in reversed(self._pools):
            try:
                await asyncio.wait_for(self.close(pool, timeout=1.0), 15)
            except Exception:
                log.exception("closing %r after the test failed", pool)
            s = pool.stats()
            if s.size or s.in_use:
                with contextlib.suppress(Exception):
                    await self.terminate(pool)
        for conn in self._admins:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
            if not conn.is_closed():
                conn.terminate()

    # -- pools -------------------------------------------------------------------------------

    @property
    def raw_connection_class(self) -> type:
        if self.driver == "asyncpg":
            return asyncpg.Connection
        if self.driver == "psycopg":
            return psycopg.AsyncConnection if self.is_async else psycopg.Connection
        return psycopg2.extensions.connection

    @property
    def driver_errors(self) -> tuple[type[BaseException], ...]:
        """What the driver raises when the server side of a connection goes away."""
        if self.driver == "asyncpg":
            return (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
        if self.driver == "psycopg":
            return (psycopg.Error,)
        return (psycopg2.Error,)

    def app_of(self, pool: Any) -> str:
        """The application_name the pool's connections carry."""
        return self._apps[id(pool)]

    async def make_pool(
        self,
        server: Any,
        *,
        dsn: str | None = None,
        app: str | None = None,
        opened: bool = True,
        wait: bool = True,
        **options: Any,
    ) -> Any:
        """A pool on ``server`` (or ``dsn``), opened and filled unless told otherwise.

        Connections carry a unique ``application_name`` (see :meth:`app_of`) so the admin
        connection can count them.  The acquire timeout defaults to 10 s, so a sync thread
        never blocks for ever.
        """
        app = app or unique("app")
        options.setdefault("timeout", 10.0)
        if self.driver == "asyncpg":
            options.setdefault("server_settings", {"application_name": app})
        else:
            options.setdefault("application_name", app)
        pool = self.pool_class(server.dsn if dsn is None else dsn, driver=self.driver, **options)
        self._pools.append(pool)
        self._apps[id(pool)] = app
        if opened:
            await self.open(pool, wait=wait)
        return pool

    async def admin(self, server: Any) -> Admin:
        conn = await asyncpg.connect(**server.connect_kwargs(), timeout=10)
        self._admins.append(conn)
        return Admin(conn)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(...)`` (async pairs) or run it in a worker thread (thread pairs)."""
        if self.is_async:
            return await fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def open(self, pool: Any, *, wait: bool = True, timeout: Any = _UNSET) -> None:
        kw = {} if timeout is _UNSET else {"timeout": timeout}
        await self.call(pool.open, wait=wait, **kw)

    async def acquire(self, pool: Any, *, timeout: Any = _UNSET) -> Any:
        kw = {} if timeout is _UNSET else {"timeout": timeout}
        return await self.call(pool.acquire, **kw)

    async def release(self, pool: Any, conn: Any) -> None:
        await self.call(pool.release, conn)

    async def close(self, pool: Any, *, timeout: Any = _UNSET) -> None:
        kw = {} if timeout is _UNSET else {"timeout": timeout}
        await self.call(pool.close, **kw)

    async def terminate(self, pool: Any) -> None:
        if self.is_async:
            pool.terminate()
        else:
            await asyncio.to_thread(pool.terminate)

    async def expire(self, pool: Any) -> None:
        await self.call(pool.expire)

    async def check(self, pool: Any) -> None:
        await self.call(pool.check)

    @contextlib.asynccontextmanager
    async def connection(self, pool: Any, *, timeout: Any = _UNSET) -> AsyncIterator[Any]:
        """``pool.connection()`` as an async context manager for every pair."""
        kw = {} if timeout is _UNSET else {"timeout": timeout}
        if self.is_async:
            async with pool.connection(**kw) as conn:
                yield conn
            return
        cm = pool.connection(**kw)
        conn = await asyncio.to_thread(cm.__enter__)
        try:
            yield conn
        except BaseException as exc:
            if not await asyncio.to_thread(cm.__exit__, type(exc), exc, exc.__traceback__):
                raise
        else:
            await asyncio.to_thread(cm.__exit__, None, None, None)

    # -- using a leased connection -----------------------------------------------------------

    async def query_value(self, conn: Any, sql: str) -> Any:
        """First column of the first row of ``sql`` (no parameters: placeholders differ)."""
        if self.driver == "asyncpg":
            return await conn.fetchval(sql)
        if self.is_async:
            cur = await conn.execute(sql)
            row = await cur.fetchone()
            assert row is not None
            return row[0]
        return await asyncio.to_thread(_sync_value, self.driver, conn, sql)

    async def execute(self, conn: Any, sql: str) -> None:
        if self.is_async:
            await conn.execute(sql)
        else:
            await asyncio.to_thread(_sync_execute, self.driver, conn, sql)

    async def commit(self, conn: Any) -> None:
        if self.driver == "asyncpg":
            if conn.is_in_transaction():
                await conn.execute("COMMIT")
        elif self.is_async:
            await conn.commit()
        else:
            await asyncio.to_thread(conn.commit)

    async def run_committed(self, conn: Any, sql: str) -> None:
        """Run ``sql`` so that its effect outlives the transaction (commit where needed)."""
        await self.execute(conn, sql)
        await self.commit(conn)

    async def begin(self, conn: Any) -> None:
        """Open a transaction (explicitly for asyncpg, implicitly for the psycopgs)."""
        if self.driver == "asyncpg":
            await conn.execute("BEGIN")
        else:
            await self.execute(conn, "SELECT 1")

    async def close_connection(self, conn: Any) -> None:
        """The borrower closes the driver connection under the lease (it should not)."""
        if self.is_async:
            await conn.close()
        else:
            await asyncio.to_thread(conn.close)

    @contextlib.asynccontextmanager
    async def pool_context(self, pool: Any) -> AsyncIterator[Any]:
        """``async with pool`` / ``with pool``: open and fill on entry, close on exit."""
        if self.is_async:
            async with pool as entered:
                yield entered
            return
        entered = await asyncio.to_thread(pool.__enter__)
        try:
            yield entered
        finally:
            await asyncio.to_thread(pool.__exit__, None, None, None)

    async def set_autocommit(self, conn: Any, value: bool) -> None:
        """The driver's own way: ``await conn.set_autocommit()`` for psycopg's
        AsyncConnection, plain attribute assignment for the sync drivers."""
        if self.driver == "asyncpg":
            raise TypeError("asyncpg has no autocommit switch")
        if self.is_async:
            await conn.set_autocommit(value)
        else:
            conn.autocommit = value

    def in_transaction(self, conn: Any) -> bool:
        """The driver's own, local view of the transaction status."""
        if self.driver == "asyncpg":
            return bool(conn.is_in_transaction())
        if self.driver == "psycopg":
            return conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        return conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE

    def backend_pid(self, conn: Any) -> int:
        """The server process behind a leased connection (read locally)."""
        if self.driver == "asyncpg":
            return int(conn.get_server_pid())
        if self.driver == "psycopg":
            return int(conn.info.backend_pid)
        return int(conn.get_backend_pid())

    def hook(
        self, calls: list[Any], sql: str, *, commit: bool = True, fail_first: int = 0
    ) -> Callable[[Any], Any]:
        """A hook (``reset=``, ``configure=``, ``check=``) in the pair's style: a coroutine
        function for AsyncPool, a plain one for Pool.

        It records the driver connection it was given in ``calls``, raises ``Unhealthy`` on
        its first ``fail_first`` calls, and otherwise runs ``sql`` (committing afterwards
        for the psycopgs unless ``commit`` is false).
        """

        def enter(conn: Any) -> None:
            calls.append(conn)
            if len(calls) <= fail_first:
                raise Unhealthy(f"hook call {len(calls)} fails on purpose")

        if self.driver == "asyncpg":

            async def asyncpg_hook(conn: Any) -> None:
                enter(conn)
                await conn.execute(sql)

            return asyncpg_hook
        if self.is_async:

            async def psycopg_async_hook(conn: Any) -> None:
                enter(conn)
                await conn.execute(sql)
                if commit:
                    await conn.commit()

            return psycopg_async_hook

        def sync_hook(conn: Any) -> None:
            enter(conn)
            _sync_execute(self.driver, conn, sql)
            if commit:
                conn.commit()

        return sync_hook

    # -- giving up -----------------------------------------------------------------------

    async def give_up_waiting(self, pool: Any, after: float) -> None:
        """A caller queues for a connection and gives up after ``after`` seconds.

        Async pairs: the waiting task is cancelled.  Thread pairs: the acquire times out.
        """
        if self.is_async:
            task = asyncio.create_task(pool.acquire(timeout=None))
            await eventually(lambda: pool.stats().waiting >= 1, what="the caller queues")
            await asyncio.sleep(after)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                lease = await task
                await pool.release(lease)
                raise AssertionError("the cancelled waiter was served anyway")
            assert task.cancelled()
        else:
            t0 = time.monotonic()
            try:
                lease = await asyncio.to_thread(pool.acquire, timeout=after)
            except PoolTimeout:
                assert time.monotonic() - t0 >= after * 0.9
            else:
                await asyncio.to_thread(pool.release, lease)
                raise AssertionError("the waiter was served although nothing was released")

    async def interrupt_while_holding(self, pool: Any) -> None:
        """A borrower inside ``pool.connection()`` is interrupted.

        Async pairs: the task is cancelled in the middle of a long query.  Thread pairs: the
        block raises a BaseException (there is no portable way to interrupt a thread).
        """
        if self.is_async:
            started = asyncio.Event()

            async def borrower() -> None:
                async with pool.connection() as conn:
                    started.set()
                    await self.execute(conn, "SELECT pg_sleep(3)")

            task = asyncio.create_task(borrower())
            await asyncio.wait_for(started.wait(), 10)
            await asyncio.sleep(0.2)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert task.cancelled()
        else:

            def borrower() -> bool:
                try:
                    with pool.connection() as conn:
                        _sync_execute(self.driver, conn, "SELECT 1")
                        raise Interrupted
                except Interrupted:
                    return True
                return False

            assert await asyncio.to_thread(borrower)


def _sync_value(driver: str, conn: Any, sql: str) -> Any:
    if driver == "psycopg":
        row = conn.execute(sql).fetchone()
    else:
        with conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
    assert row is not None
    return row[0]


def _sync_execute(driver: str, conn: Any, sql: str) -> None:
    if driver == "psycopg":
        conn.execute(sql)
    else:
        with conn.cursor() as cur:
            cur.execute(sql)


COMBOS = [
    Combo("asyncpg", AsyncPool),
    Combo("psycopg", AsyncPool),
    Combo("psycopg", Pool),
    Combo("psycopg2", Pool),
]


def run_async(fn: Callable[..., Awaitable[Any]]) -> Callable[..., None]:
    """``async def test_x(combo, ...)`` becomes a plain test run with ``combo.run``."""

    @functools.wraps(fn)
    def test(*args: Any, **kwargs: Any) -> None:
        combo = next(v for v in (*args, *kwargs.values()) if isinstance(v, Combo))
        combo.run(fn(*args, **kwargs))  # type: ignore[arg-type]

    return test
