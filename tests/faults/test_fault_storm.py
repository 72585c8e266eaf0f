"""Connect storms: a crowd arrives at a pool that has no connection yet.

Attempts are counted where the server sees them: every connection the pool makes goes
through a fault proxy, which counts what it accepts (``proxy.accepted``), refused upstream
or not.  The admin connection goes straight to the server and is not counted.

Crowd sizes: 1,000 callers for every pair, as the issue asks: tasks for the asyncio pool,
real threads (each blocked in ``acquire``) for the thread pool.  A thousand threads sounds
heavy but is not, measured here on two cores: they start in about 50 ms and the whole storm
takes 0.6-0.8 s, against 0.15 s for 200 threads, so there is no reason to test the thread
pool with a smaller crowd than the asyncio pool gets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from conformance_harness import Combo, dsn_via, run_async
from faultkit import Ledger, Peaks, assert_settled, crowd, measure, watch_peaks

from faultproxy import FaultProxy
from pgmarina import PoolConnectError, PoolTimeout

CROWD = 1000


@pytest.mark.slow
@run_async
async def test_a_connect_storm_opens_at_most_max_size_connections_max_connecting_at_a_time(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    """No herd: a crowd at an empty pool costs the server ``max_size`` connects at most, made
    ``max_connecting`` at a time, and every connect made is one the pool keeps."""
    n = CROWD
    admin = await combo.admin(pg)
    pool = await combo.make_pool(
        pg, dsn=dsn_via(pg, pg_proxy), min_size=2, max_size=10, max_connecting=2,
        max_idle=0.5, housekeeping_interval=0.1, check_window=None, wait=False,
    )  # fmt: skip
    peaks = Peaks()
    watcher = asyncio.create_task(watch_peaks(pool, peaks))
    ledger = Ledger()
    took = await crowd(combo, pool, ledger, n, timeout=30, hold=0.002)
    peaks.stop.set()
    await watcher
    s = pool.stats()
    measure(
        "storm", pair=combo.id, crowd=n, attempts=pg_proxy.accepted, opened=s.connections_opened,
        peak_connecting=peaks.connecting, peak_size=peaks.size, seconds=took,
        p99_wait=ledger.latencies()[int(0.99 * (n - 1))],
    )  # fmt: skip
    ledger.check(expected=n)
    assert ledger.ok == n
    assert peaks.looks > 10  # the watcher did watch
    assert peaks.connecting <= 2
    assert 2 <= pg_proxy.accepted <= 10
    assert s.connections_opened == pg_proxy.accepted  # no connect wasted
    assert s.connections_failed == 0
    assert s.acquires == n
    await assert_settled(combo, pool, admin, size=2)
    assert pg_proxy.accepted == s.connections_opened  # settling made no connect of its own


@pytest.mark.slow
@pytest.mark.private_cluster
@run_async
async def test_a_connect_storm_during_an_outage_probes_one_connect_at_a_time(
    combo: Combo,
    make_private_pg: Callable[..., Any],
    fault_proxy: Callable[[str, int], FaultProxy],
) -> None:
    """A crowd arrives while the server is down: the pool probes with one connect at a time,
    backing off, instead of one per caller; once the server is back every caller is served
    (their timeout outlasts the outage), and quickly."""
    n = CROWD
    server = make_private_pg()
    proxy = fault_proxy(server.host, server.port)
    admin_server = server  # the admin connects after the restart, straight to the server
    await asyncio.to_thread(server.stop)
    pool = await combo.make_pool(
        server, dsn=dsn_via(server, proxy), min_size=2, max_size=10, max_connecting=2,
        fail_fast_after=None, backoff_initial=0.01, backoff_max=0.5,
        max_idle=0.5, housekeeping_interval=0.1, check_window=None, wait=False,
    )  # fmt: skip
    peaks = Peaks()
    watcher = asyncio.create_task(watch_peaks(pool, peaks))
    ledger = Ledger()
    requests = asyncio.create_task(crowd(combo, pool, ledger, n, timeout=20, hold=0.002))
    outage = 1.5
    await asyncio.sleep(outage)
    attempts_down = proxy.accepted
    await asyncio.to_thread(server.start)
    back = time.monotonic()
    await requests
    peaks.stop.set()
    await watcher
    s = pool.stats()
    recovery = ledger.first_ok_after(back)
    measure(
        "storm-outage", pair=combo.id, crowd=n, outage=outage, attempts_while_down=attempts_down,
        failed=s.connections_failed, peak_connecting=peaks.connecting,
        first_served_after_restart=recovery, opened=s.connections_opened,
    )  # fmt: skip
    ledger.check(expected=n)
    assert ledger.ok == n
    # One probe at a time, delays doubling from 10 ms (halved at random) up to 0.5 s: about
    # eight probes fit in 1.5 s, plus the two connects the pool started before the first
    # failure.  Twenty allows for a slow machine; a herd would be hundreds.
    assert 2 <= attempts_down <= 20
    assert peaks.connecting <= 2
    assert recovery is not None and recovery < 0.5 + 2.0  # one backoff_max, and a connect
    assert s.acquires == n
    admin = await combo.admin(admin_server)
    await assert_settled(combo, pool, admin, size=2)


@run_async
async def test_callers_of_a_pool_that_cannot_connect_fail_clearly_within_their_timeout(
    combo: Combo,
    make_private_pg: Callable[..., Any],
    fault_proxy: Callable[[str, int], FaultProxy],
) -> None:
    """A crowd at a pool whose server stays down: every caller gets a PoolTimeout (or, once
    failing for fail_fast_after, a PoolConnectError) saying the pool cannot connect, within
    its timeout; none hangs, none is lost."""
    server = make_private_pg()
    proxy = fault_proxy(server.host, server.port)
    await asyncio.to_thread(server.stop)
    pool = await combo.make_pool(
        server, dsn=dsn_via(server, proxy), min_size=1, max_size=4, fail_fast_after=0.6,
        backoff_max=0.2, wait=False,
    )  # fmt: skip
    ledger = Ledger()
    n = 50
    await crowd(combo, pool, ledger, n, timeout=0.4)  # all queue before fail-fast begins
    await asyncio.sleep(0.4)
    await crowd(combo, pool, ledger, n, timeout=5)  # refused at once: failing for 0.8 s
    ledger.check(
        expected=2 * n, allowed=(PoolTimeout, PoolConnectError), says=("cannot connect",)
    )
    kinds = ledger.kinds()
    measure("storm-down", pair=combo.id, attempts=proxy.accepted, **kinds)
    assert kinds["PoolTimeout"] == n
    assert kinds["PoolConnectError"] == n
    assert max(o.elapsed for o in ledger.outcomes[n:]) < 0.5  # refused, not left to wait
    assert pool.stats().timeouts == n
    assert proxy.accepted <= 15
