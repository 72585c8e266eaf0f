"""LISTEN/NOTIFY on the pool's listener (issue 15), on every driver x shell pair.

The listener holds a connection of its own, outside the pool's slots.  The pools here
keep ``min_size=0``, so the only backend carrying the pool's application_name is the
listener's: the admin connection finds it by that name, sends ``NOTIFY`` and terminates
it.  Callbacks of the thread pool run on the listener's thread; the tests only append to
lists there and poll them from the loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import pytest
from conformance_harness import Combo, eventually, run_async, unique

from pgmarina import PoolClosed, PoolTimeout
from pgmarina.listener import Gap, Notification


async def _make(combo: Combo, pg: Any) -> Any:
    return await combo.make_pool(pg, min_size=0, backoff_initial=0.02, backoff_max=0.2)


async def _listen(combo: Combo, pool: Any, channel: str, got: list[Any], gaps: list[Any]) -> Any:
    return await combo.call(pool.listen, channel, got.append, on_gap=gaps.append)


async def _notify(admin: Any, channel: str, payload: str) -> None:
    await admin.execute("SELECT pg_notify($1, $2)", channel, payload)


async def _subscribe(combo: Combo, notes: Any) -> None:
    await combo.call(notes.subscribe)


async def _next(combo: Combo, notes: Any) -> Any:
    if combo.is_async:
        return await asyncio.wait_for(notes.__anext__(), 5)
    return await asyncio.to_thread(notes.get, 5)


@run_async
async def test_a_listener_delivers_notifications_on_a_connection_outside_the_slots(
    combo: Combo, pg: Any
) -> None:
    pool = await _make(combo, pg)
    admin = await combo.admin(pg)
    channel = unique("Chan nel")  # a space and capitals: the name must be quoted
    got: list[Notification] = []
    sub = await _listen(combo, pool, channel, got, [])
    stats = pool.stats()
    assert (stats.dedicated, stats.size) == (1, 0)
    [pid] = await admin.pids(combo.app_of(pool))
    await _notify(admin, channel, "hello")
    await _notify(admin, channel + "x", "not mine")
    await eventually(lambda: got, what="the notification")
    assert got == [Notification(channel, "hello", got[0].pid)]
    assert await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
    ) == 1
    await combo.call(sub.unlisten)
    assert not sub.active
    await combo.close(pool)
    assert pool.stats().dedicated == 0
    await admin.wait_gone(pid)


@run_async
async def test_the_listener_listens_again_after_pg_terminate_backend_and_reports_the_gap(
    combo: Combo, pg: Any
) -> None:
    """The listener's backend is terminated: it reconnects, LISTENs on every channel again,
    tells each subscriber that notifications may have been missed, and delivers again."""
    pool = await _make(combo, pg)
    admin = await combo.admin(pg)
    one, two = unique("one"), unique("two")
    got: list[Notification] = []
    gaps: list[Gap] = []
    await _listen(combo, pool, one, got, gaps)
    await _listen(combo, pool, two, got, gaps)
    [pid] = await admin.pids(combo.app_of(pool))
    await admin.terminate(pid)
    await eventually(lambda: len(gaps) == 2, what="a gap on each channel")
    assert {g.channel for g in gaps} == {one, two}
    assert all(g.resumed_at >= g.lost_at and g.error for g in gaps)
    [new_pid] = await admin.pids(combo.app_of(pool))
    assert new_pid != pid
    await _notify(admin, one, "after")
    await _notify(admin, two, "after too")
    await eventually(lambda: len(got) == 2, what="notifications on the new connection")
    assert sorted((n.channel, n.payload) for n in got) == [(one, "after"), (two, "after too")]
    assert pool.stats().dedicated == 1
    assert pool.listener().reconnects == 1


@run_async
async def test_the_notification_iterator_yields_a_gap_after_a_reconnect(
    combo: Combo, pg: Any
) -> None:
    pool = await _make(combo, pg)
    admin = await combo.admin(pg)
    channel = unique("it")
    notes = pool.notifications(channel)
    await _subscribe(combo, notes)
    await _notify(admin, channel, "1")
    first = await _next(combo, notes)
    assert isinstance(first, Notification) and first.payload == "1"
    [pid] = await admin.pids(combo.app_of(pool))
    await admin.terminate(pid)
    gap = await _next(combo, notes)
    assert isinstance(gap, Gap) and gap.channel == channel and gap.seconds >= 0
    await _notify(admin, channel, "2")
    second = await _next(combo, notes)
    assert isinstance(second, Notification) and second.payload == "2"
    await combo.call(notes.aclose if combo.is_async else notes.close)


@run_async
async def test_closing_the_pool_closes_the_listener_and_ends_its_iterators(
    combo: Combo, pg: Any
) -> None:
    pool = await _make(combo, pg)
    admin = await combo.admin(pg)
    notes = pool.notifications(unique("end"))
    await _subscribe(combo, notes)
    [pid] = await admin.pids(combo.app_of(pool))
    await combo.close(pool)
    await admin.wait_gone(pid)
    assert pool.stats().dedicated == 0
    if combo.is_async:
        with pytest.raises(StopAsyncIteration):
            await notes.__anext__()
    else:
        assert await asyncio.to_thread(notes.get, 1) is None
    with pytest.raises(PoolClosed):
        await combo.call(pool.listen, "late", print)


@run_async
async def test_listen_refuses_a_bad_channel_or_callback_naming_it(combo: Combo, pg: Any) -> None:
    pool = await _make(combo, pg)
    with pytest.raises(TypeError, match="channel"):
        await combo.call(pool.listen, 5, print)
    with pytest.raises(ValueError, match="channel"):
        await combo.call(pool.listen, "", print)
    with pytest.raises(TypeError, match="callback"):
        await combo.call(pool.listen, "ok", None)
    with pytest.raises(TypeError, match="on_gap"):
        await combo.call(pool.listen, "ok", print, on_gap=3)
    with pytest.raises(ValueError, match="channel must be at most 63 bytes"):
        await combo.call(pool.listen, "é" * 32, print)  # 64 bytes: the server would cut it
    with pytest.raises(ValueError, match="timeout"):
        await combo.call(pool.listen, "ok", print, timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        await combo.call(pool.listen, "ok", print, timeout="1")
    assert pool.stats().dedicated == 0  # nothing was started for them


@run_async
async def test_listen_times_out_while_the_server_is_unreachable_and_leaves_nothing_subscribed(
    combo: Combo, pg: Any
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dsn = f"postgresql://{pg.user}@127.0.0.1:{port}/{pg.dbname}"
    pool = await combo.make_pool(pg, dsn=dsn, min_size=0, backoff_initial=0.02)
    with pytest.raises(PoolTimeout, match=r"LISTEN 'nowhere' not active after 0\.3s"):
        await combo.call(pool.listen, "nowhere", print, timeout=0.3)
    assert pool.listener().channels == frozenset()
    assert pool.stats().dedicated == 0


@pytest.mark.slow
@pytest.mark.private_cluster
@run_async
async def test_the_listener_rides_out_a_server_outage_and_reports_its_length(
    combo: Combo, private_pg: Any
) -> None:
    """The server is down for a second: the listener retries with backoff meanwhile, and
    the gap it reports once LISTEN is back spans the outage."""
    pool = await combo.make_pool(private_pg, min_size=0, backoff_initial=0.05, backoff_max=0.3)
    channel = unique("outage")
    got: list[Notification] = []
    gaps: list[Gap] = []
    await _listen(combo, pool, channel, got, gaps)
    await asyncio.to_thread(private_pg.stop)
    t0 = time.monotonic()
    await asyncio.sleep(1.0)
    assert pool.stats().dedicated == 0 and not gaps
    await asyncio.to_thread(private_pg.start)
    outage = time.monotonic() - t0
    await eventually(lambda: gaps, timeout=10, what="the gap")
    [gap] = gaps
    assert outage - 0.2 <= gap.seconds <= outage + 5
    admin = await combo.admin(private_pg)
    await _notify(admin, channel, "back")
    await eventually(lambda: got, what="a notification after the outage")
    assert got[0].payload == "back" and pool.stats().dedicated == 1


@run_async
async def test_a_thread_pool_callback_may_subscribe_without_deadlocking_the_listener(
    thread_combo: Combo, pg: Any
) -> None:
    """The listener's thread runs the callbacks; a callback that calls ``listen()`` must not
    wait for that same thread to LISTEN.  (AsyncPool's async callbacks run in tasks of their
    own.)"""
    combo = thread_combo
    pool = await _make(combo, pg)
    admin = await combo.admin(pg)
    first, second = unique("first"), unique("second")
    got: list[Notification] = []
    threads: list[str] = []

    def on_first(note: Notification) -> None:
        threads.append(threading.current_thread().name)
        pool.listen(second, got.append, timeout=5)

    await combo.call(pool.listen, first, on_first)
    await _notify(admin, first, "go")
    await eventually(lambda: second in pool.listener().channels and threads, what="subscribed")
    await eventually(lambda: pool.listener()._active >= {first, second}, what="LISTEN second")
    await _notify(admin, second, "reached")
    await eventually(lambda: got, what="the second channel's notification")
    assert threads == [f"{pool.name} listener"]


@run_async
async def test_a_rejected_listener_connect_warns_once_and_says_why_listen_timed_out(
    combo: Combo, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that does not exist is retried every backoff_max, but the warning is not
    repeated on every retry, and the PoolTimeout says what the server answered."""
    caplog.set_level(logging.DEBUG, logger="pgmarina")
    dsn = f"postgresql://{pg.user}@{pg.host}:{pg.port}/{unique('nodb')}"
    pool = await combo.make_pool(pg, dsn=dsn, min_size=0, backoff_initial=0.01,
                                 backoff_max=0.02)
    with pytest.raises(PoolTimeout, match="does not exist"):
        await combo.call(pool.listen, "ch", print, timeout=0.5)
    failed = [r for r in caplog.records
              if r.name == "pgmarina" and "listener: connect failed" in r.getMessage()]
    assert len(failed) >= 5  # it kept trying...
    assert [r.levelname for r in failed].count("WARNING") == 1  # ...and said so once


@run_async
async def test_listen_needs_no_free_slot_and_takes_none(combo: Combo, pg: Any) -> None:
    """The listener's connection is its own: with the only slot leased, listen() still
    works at once, and the pool's size stays what its leases make it."""
    pool = await combo.make_pool(pg, min_size=1, max_size=1, timeout=0.5)
    admin = await combo.admin(pg)
    conn = await combo.acquire(pool)
    channel = unique("busy")
    got: list[Notification] = []
    await _listen(combo, pool, channel, got, [])
    await _notify(admin, channel, "while leased")
    await eventually(lambda: got, what="the notification")
    s = pool.stats()
    assert (s.size, s.in_use, s.dedicated, s.waiting) == (1, 1, 1, 0)
    assert len(await admin.pids(combo.app_of(pool))) == 2
    await combo.release(pool, conn)
