"""Regression tests for shell-specific defects of the Reliability issue, on real servers.

What applies to every driver x shell pair lives in the conformance suite
(``test_conformance_reliability.py``); these are the defects of one shell or one driver.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import backends, eventually
from pgmarina import AsyncPool, Pool, PoolError


def _app() -> str:
    return f"rel_{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------------------------
# Defect 13: an AsyncPool used from a second event loop


def _async_kwargs(driver: str, app: str) -> dict[str, Any]:
    if driver == "asyncpg":
        return {"server_settings": {"application_name": app}}
    return {"application_name": app}


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
def test_an_async_pool_refuses_another_event_loop_and_loses_no_connection(
    pg: Any, driver: str
) -> None:
    """Defect 13: an acquire from a second loop raised "Event loop is closed" but stayed
    queued, and the next returned connection went to that dead waiter.  Now every acquire
    from another loop is refused with a clear error, and the pool loses nothing."""
    home = asyncio.new_event_loop()
    other = asyncio.new_event_loop()
    pool = AsyncPool(pg.dsn, driver=driver, min_size=1, max_size=1, timeout=2,
                     **_async_kwargs(driver, _app()))
    try:
        home.run_until_complete(pool.open(wait=True))
        held = home.run_until_complete(pool.acquire())

        async def from_the_other_loop() -> None:
            for attempt in (pool.acquire, pool.acquire):  # the pool is busy: would queue
                with pytest.raises(PoolError, match="event loop"):
                    await attempt()
            with pytest.raises(PoolError, match="event loop"):
                async with pool.connection():
                    pass  # pragma: no cover - never entered

        other.run_until_complete(from_the_other_loop())
        assert pool.stats().waiting == 0
        home.run_until_complete(pool.release(held))

        async def idle_pool_from_the_other_loop() -> None:  # fast path too
            with pytest.raises(PoolError, match="event loop"):
                await pool.acquire()

        other.run_until_complete(idle_pool_from_the_other_loop())

        async def served_at_home() -> None:
            conn = await pool.acquire(timeout=2)
            await pool.release(conn)

        home.run_until_complete(served_at_home())
        s = pool.stats()
        assert (s.size, s.idle, s.in_use, s.waiting) == (1, 1, 0, 0)
    finally:
        home.run_until_complete(pool.close())
        home.close()
        other.close()


# --------------------------------------------------------------------------------------------
# Defect 2: psycopg AsyncPool closing a socket the event loop still watches


@contextlib.contextmanager
def _echo_server() -> Iterator[int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(256)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = srv.accept()
            except OSError:
                continue
            with client:
                client.settimeout(2)
                with contextlib.suppress(OSError):
                    client.sendall(client.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        srv.close()


@pytest.mark.slow
def test_a_cancelled_release_never_closes_a_socket_the_loop_still_watches(pg: Any) -> None:
    """Defect 2: cancelling a psycopg release while its ROLLBACK ran closed the socket under
    psycopg's loop registration; the next socket given that descriptor (here a plain asyncio
    echo client that never touches the pool) failed with FileNotFoundError."""
    results: collections.Counter[str] = collections.Counter()

    async def echo_user(port: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 2
                )
                writer.write(b"ping")
                data = await asyncio.wait_for(reader.read(100), 2)
                writer.close()
                await writer.wait_closed()
                results["ok" if data == b"ping" else "bad reply"] += 1
            except Exception as exc:
                results[f"{type(exc).__name__}: {exc}"] += 1

    async def churn(pool: AsyncPool, stop: asyncio.Event) -> None:
        while not stop.is_set():
            conn = await pool.acquire(timeout=5)
            await conn.execute("SELECT 1")  # leaves a transaction: the release rolls back
            release = asyncio.ensure_future(pool.release(conn))
            await asyncio.sleep(0)
            release.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await release

    async def main(port: int) -> None:
        pool = AsyncPool(pg.dsn, driver="psycopg", min_size=1, max_size=4)
        await pool.open(wait=True)
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(echo_user(port, stop)) for _ in range(3)]
        tasks += [asyncio.ensure_future(churn(pool, stop)) for _ in range(3)]
        await asyncio.sleep(3)
        stop.set()
        await asyncio.gather(*tasks)
        failed = pool.stats().connections_failed
        await pool.close()
        assert failed == 0, f"{failed} of the pool's own connects failed"

    with _echo_server() as port:
        asyncio.run(main(port))
    assert results["ok"] > 10
    assert set(results) == {"ok"}, f"the unrelated echo client saw: {dict(results)}"


# --------------------------------------------------------------------------------------------
# Defect 9: a thread Pool that is never closed


def _pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name} ")]


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_a_forgotten_thread_pool_is_freed_with_its_threads_and_connections(
    pg: Any, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 9: a worker thread held its last job, and through it the pool, so a Pool
    dropped without close() kept its threads and server connections for ever."""
    app = _app()
    names = []
    # The pools sit in reference cycles; an automatic collection in the middle of the loop
    # would free one early and make the count below depend on the collector's timing.
    gc.disable()
    try:
        for _ in range(3):
            pool = Pool(pg.dsn, driver=driver, min_size=2, max_size=4, application_name=app)
            pool.open(wait=True)
            with pool.connection() as conn:
                conn.cursor().execute("SELECT 1")
            names.append(pool.name)
            assert _pool_threads(pool.name)
            del pool, conn
        assert backends(pg, app) == 6
    finally:
        gc.enable()
    gc.collect()

    async def freed() -> None:
        await eventually(lambda: not any(_pool_threads(n) for n in names), timeout=10,
                         what="the forgotten pools' threads exit")
        await eventually(lambda: backends(pg, app) == 0, timeout=10,
                         what="the forgotten pools' server connections close")

    asyncio.run(freed())
    # Only this test's pools count: one from an earlier test may be collected in this one.
    said = [r.getMessage() for r in caplog.records if "never closed" in r.getMessage()]
    assert sorted(m.split()[0] for m in said if m.split()[0] in names) == sorted(names)


def test_a_closed_thread_pool_says_nothing_when_collected(
    pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pool = Pool(pg.dsn, min_size=1, max_size=1)
    pool.open(wait=True)
    pool.close()
    del pool
    gc.collect()
    time.sleep(0.05)
    assert not [r for r in caplog.records if "never closed" in r.getMessage()]
