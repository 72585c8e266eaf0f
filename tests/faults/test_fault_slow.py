"""A slow server: every byte between the pool and the server is delayed by the fault proxy.

Latency, not a throughput cap: with a delay of ``d`` each round trip takes ``2d``, so a
connect (several round trips) and every query slow down alike.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conformance_harness import Combo, dsn_via, run_async
from faultkit import Ledger, assert_settled, crowd, measure, one_request

from faultproxy import FaultProxy
from pgmarina import PoolConnectError, PoolTimeout

pytestmark = [pytest.mark.slow]


@run_async
async def test_a_slow_server_serves_every_request_within_its_timeout_and_opens_no_extra(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    """Connects and queries take 100 ms round trips: every caller of a crowd is served (its
    timeout allows for the slowness), the pool opens no more connections than it may, and
    callers whose timeout does not allow for it get a PoolTimeout that says so, on time."""
    admin = await combo.admin(pg)
    pg_proxy.delay(0.05)
    pool = await combo.make_pool(
        pg, dsn=dsn_via(pg, pg_proxy), min_size=2, max_size=4, wait=False,
        max_idle=0.5, housekeeping_interval=0.1, check_window=None,
    )  # fmt: skip
    t0 = time.monotonic()
    first = Ledger()
    await one_request(combo, pool, first, timeout=10)
    first_served = time.monotonic() - t0
    ledger = Ledger()
    took = await crowd(combo, pool, ledger, 40, timeout=15)
    ledger.check(expected=40)
    assert ledger.ok == 40 and first.ok == 1
    # Callers with no patience for a slow server: most give up, each on time and saying why.
    impatient = Ledger()
    await crowd(combo, pool, impatient, 20, timeout=0.3)
    impatient.check(expected=20, allowed=(PoolTimeout,), says=("no connection available",))
    s = pool.stats()
    lat = ledger.latencies()
    measure(
        "slow", pair=combo.id, delay=0.05, first_served=first_served, crowd_seconds=took,
        median=lat[len(lat) // 2], attempts=pg_proxy.accepted, impatient=impatient.kinds(),
    )  # fmt: skip
    assert 1 <= len(impatient.errors(PoolTimeout)) <= 20
    assert pg_proxy.accepted == s.connections_opened <= 4
    assert s.timeouts == len(impatient.errors(PoolTimeout))
    assert s.acquires == 1 + 40 + impatient.ok
    pg_proxy.pass_through()
    await assert_settled(combo, pool, admin, size=2)


@run_async
async def test_a_server_slower_than_connect_timeout_fails_callers_clearly_and_recovers(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    """Each connect overruns ``connect_timeout``: callers fail with an error saying the
    connect timed out, within their timeout; the half-made connections are all closed (none
    is left open at the proxy or the server); when the server is fast again the pool fills."""
    admin = await combo.admin(pg)
    pg_proxy.delay(1.5)  # a connect needs a round trip at least: 3 s
    pool = await combo.make_pool(
        pg, dsn=dsn_via(pg, pg_proxy), min_size=2, max_size=4, wait=False,
        connect_timeout=1, fail_fast_after=2.5, backoff_max=0.2,
        max_idle=0.5, housekeeping_interval=0.1,
    )  # fmt: skip
    ledger = Ledger()
    timed_out = ("timed out", "timeout expired")
    # Whichever comes first: its own timeout (PoolTimeout) or the pool failing fast.
    await crowd(combo, pool, ledger, 10, timeout=2.8)
    await asyncio.sleep(0.5)
    await crowd(combo, pool, ledger, 10, timeout=2.8)
    ledger.check(expected=20, allowed=(PoolTimeout, PoolConnectError), says=timed_out)
    assert pool.stats().connections_opened == 0
    failed = pool.stats().connections_failed
    pg_proxy.pass_through()
    back = time.monotonic()
    retries = Ledger()
    while not retries.ok:
        await one_request(combo, pool, retries, timeout=5)
        await asyncio.sleep(0.01)
    recovery = retries.first_ok_after(back)
    retries.check(expected=len(retries), allowed=(PoolConnectError,), says=timed_out)
    measure(
        "slow-connect-timeout", pair=combo.id, delay=1.5, connect_timeout=1, failed=failed,
        first_served_after_fast=recovery, **ledger.kinds(),
    )  # fmt: skip
    assert failed >= 1
    assert recovery is not None and recovery < 1.5 + 2.0  # a connect in the slow mode ends
    await assert_settled(combo, pool, admin, size=2)
    # Nothing half-made is left at the proxy: only the pool's own connections.
    await asyncio.to_thread(pg_proxy.wait_for_connections, 2, 10)


# --------------------------------------------------------------------------------------------
# regressions found by the scenarios above


@run_async
async def test_a_timed_out_connect_leaves_no_half_open_connection_behind(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    """Regression: the error of a connect that timed out, kept by the pool (and passed on as
    the ``__cause__`` of callers' errors), held the driver's frames, and with them psycopg's
    half-made connection: its socket stayed open, and the server's backend with it, for as
    long as anybody kept the error (with sync psycopg, until a garbage collection even after).
    """
    pg_proxy.delay(1.0)  # a connect needs two round trips at least: 4 s
    pool = await combo.make_pool(
        pg, dsn=dsn_via(pg, pg_proxy), min_size=1, max_size=1, wait=False,
        connect_timeout=1, fail_fast_after=None, backoff_max=0.2,
    )  # fmt: skip
    ledger = Ledger()
    await one_request(combo, pool, ledger, timeout=2.5)  # the caller keeps its error
    ledger.check(expected=1, allowed=(PoolTimeout,), says=("timed out", "timeout expired"))
    assert pool.stats().connections_failed >= 1
    pg_proxy.pass_through()
    await one_request(combo, pool, ledger, timeout=5)
    assert ledger.ok == 1
    # Only the pool's one connection is left at the proxy: no abandoned connect lingers.
    await asyncio.to_thread(pg_proxy.wait_for_connections, 1, 5)


@run_async
async def test_a_timeout_after_the_pool_recovered_blames_no_connect_error_of_the_past(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    """Regression: once connects succeeded again, a PoolTimeout because every connection was
    in use still carried the last error of the outage as its ``__cause__``, blaming a server
    that had long recovered."""
    pg_proxy.stop_accepting()
    pool = await combo.make_pool(
        pg, dsn=dsn_via(pg, pg_proxy), min_size=1, max_size=1, wait=False, backoff_max=0.1,
    )  # fmt: skip
    await asyncio.sleep(0.3)
    assert pool.stats().connections_failed >= 1
    pg_proxy.start_accepting()
    async with combo.connection(pool, timeout=5):  # served: the outage is over
        with pytest.raises(PoolTimeout) as caught:
            await combo.acquire(pool, timeout=0.1)
    assert "all in use" in str(caught.value)
    assert caught.value.__cause__ is None


@run_async
async def test_a_timeout_while_connects_are_under_way_says_so_not_all_in_use(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    """Regression: a caller who gave up while the pool's only connection was still being
    made (a slow server) was told "all in use", though nothing was in use at all."""
    pg_proxy.delay(0.5)
    pool = await combo.make_pool(
        pg, dsn=dsn_via(pg, pg_proxy), min_size=1, max_size=1, wait=False,
    )  # fmt: skip
    with pytest.raises(PoolTimeout) as caught:
        await combo.acquire(pool, timeout=0.2)
    message = str(caught.value)
    assert "all in use" not in message
    assert "1 connect under way" in message
    pg_proxy.pass_through()
