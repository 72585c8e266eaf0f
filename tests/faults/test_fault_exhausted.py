"""The server's ``max_connections`` used up by another client.

The server answers every connect with ``FATAL: sorry, too many clients already`` (SQLSTATE
53300).  That is an outage, not a rejection: it passes when the other client lets go, so the
pool rides it out (backing off) and its callers fail with errors that say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from conformance_harness import Combo, run_async
from faultkit import Ledger, Peaks, assert_settled, crowd, measure, one_request, watch_peaks

from pgmarina import PoolConnectError, PoolTimeout

pytestmark = [pytest.mark.private_cluster, pytest.mark.slow]

FULL = ("too many clients",)


@contextlib.asynccontextmanager
async def hog(server: Any) -> AsyncIterator[list[asyncpg.Connection]]:
    """Another client takes every connection slot left, and lets go at the end."""
    conns: list[asyncpg.Connection] = []
    try:
        while True:
            try:
                conns.append(await asyncpg.connect(**server.connect_kwargs(), timeout=10))
            except asyncpg.TooManyConnectionsError:
                break
            assert len(conns) < 100, "the server never said it was full"
        yield conns
    finally:
        await asyncio.gather(*(c.close(timeout=5) for c in conns), return_exceptions=True)


@run_async
async def test_callers_of_a_pool_on_a_full_server_fail_clearly_and_are_served_once_it_has_room(
    combo: Combo, make_private_pg: Callable[..., Any]
) -> None:
    server = make_private_pg({"max_connections": 12})
    admin = await combo.admin(server)
    ledger = Ledger()
    async with hog(server) as taken:
        pool = await combo.make_pool(
            server, min_size=2, max_size=4, wait=False, fail_fast_after=0.5, backoff_max=0.2,
            max_idle=0.5, housekeeping_interval=0.1,
        )  # fmt: skip
        await crowd(combo, pool, ledger, 20, timeout=0.3)  # they wait, in vain
        await asyncio.sleep(0.4)
        await crowd(combo, pool, ledger, 20, timeout=5)  # failing for 0.7 s: refused at once
        assert pool.stats().connections_opened == 0
    # The pool fails fast until its next probe (within backoff_max) gets a connection:
    # callers retry, as an application with fail-fast would.
    back = time.monotonic()
    retries = Ledger()
    while not retries.ok:
        await one_request(combo, pool, retries, timeout=5)
        await asyncio.sleep(0.01)
    recovery = retries.first_ok_after(back)
    await crowd(combo, pool, ledger, 20, timeout=5)
    kinds = ledger.kinds()
    s = pool.stats()
    measure(
        "exhausted-empty", pair=combo.id, hogged=len(taken), failed=s.connections_failed,
        first_served_after_room=recovery, refused_after_room=len(retries) - 1, **kinds,
    )  # fmt: skip
    ledger.check(expected=60, allowed=(PoolTimeout, PoolConnectError), says=FULL)
    retries.check(expected=len(retries), allowed=(PoolConnectError,), says=FULL)
    assert (kinds["PoolTimeout"], kinds["PoolConnectError"], kinds["ok"]) == (20, 20, 20)
    assert max(o.elapsed for o in ledger.outcomes[20:40]) < 0.5  # refused, not left to wait
    assert recovery is not None and recovery < 0.2 + 2.0  # one backoff_max, and a connect
    assert s.timeouts == 20
    assert s.acquires == 21
    await assert_settled(combo, pool, admin, size=2)


@run_async
async def test_a_pool_keeps_serving_with_the_connections_it_has_while_the_server_is_full(
    combo: Combo, make_private_pg: Callable[..., Any]
) -> None:
    """Growing fails, but the two connections the pool holds serve every queued caller;
    once the server has room again the pool grows under load and shrinks back after."""
    server = make_private_pg({"max_connections": 12})
    admin = await combo.admin(server)
    pool = await combo.make_pool(
        server, min_size=2, max_size=6, backoff_max=0.2, max_idle=0.5,
        housekeeping_interval=0.1, check_window=None,
    )  # fmt: skip
    ledger = Ledger()
    async with hog(server):
        await crowd(combo, pool, ledger, 30, timeout=5, hold=0.02)
        during = pool.stats()
    assert during.connections_failed >= 1  # it did try to grow
    assert during.connections_opened == 2
    peaks = Peaks()
    watcher = asyncio.create_task(watch_peaks(pool, peaks))
    back = time.monotonic()
    await crowd(combo, pool, ledger, 30, timeout=5, hold=0.02)
    took = time.monotonic() - back
    peaks.stop.set()
    await watcher
    s = pool.stats()
    measure(
        "exhausted-held", pair=combo.id, failed_while_full=during.connections_failed,
        peak_size_after=peaks.size, crowd_seconds_after=took, **ledger.kinds(),
    )  # fmt: skip
    ledger.check(expected=60)
    assert ledger.ok == 60
    assert peaks.size > 2  # grew once it could
    assert s.acquires == 60
    await assert_settled(combo, pool, admin, size=2)
