"""Both shells: what happens to a connection on release (reset=), and configure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes import BUSY, CLEAN, IN_TRANSACTION, FakeConnection, Gate
from harness import Harness, both, eventually, run

from pgmarina import unwrap

ROUND_TRIPS = {"rollback", "full_reset", "settle", "ping", "close", "undo"}

#: A session reset means nothing behind a transaction-mode bouncer (Scale-out
#: issue), so ``reset="full"`` with ``pgbouncer=True`` must do what ``"auto"``
#: does: the tests of ``"auto"`` below run on both.
AUTO_OR_BOUNCER = pytest.mark.parametrize(
    "settings", [{}, {"reset": "full", "pgbouncer": True}], ids=["auto", "full-behind-pgbouncer"]
)


# ---------------------------------------------------------------------------
# reset="auto"


@both
@AUTO_OR_BOUNCER
def test_releasing_a_clean_connection_makes_no_adapter_round_trip(
    kind: str, settings: dict[str, Any]
) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        mark = h.fake.mark()
        await h.release(lease)
        await asyncio.sleep(0.02)
        assert h.fake.io_calls_since(mark) == []
        assert set(h.fake.names()[mark:]) <= {"status", "is_closed"}  # local reads only
        s = h.stats()
        assert (s.idle, s.in_use, s.resets) == (1, 0, 0)

    run(kind, body, **settings)


@both
@AUTO_OR_BOUNCER
@pytest.mark.parametrize("min_size", [1, 2], ids=["caller-waits", "background"])
def test_releasing_a_connection_in_a_transaction_rolls_it_back_and_reuses_it(
    kind: str, settings: dict[str, Any], min_size: int
) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease.begin()
        await h.release(lease)
        await eventually(lambda: h.stats().idle == min_size, what="connection back")
        assert h.fake.calls_on(raw).count("rollback") == 1
        assert "full_reset" not in h.fake.names()
        assert raw.status == CLEAN and not raw.closed
        s = h.stats()
        assert (s.resets, s.in_use, s.connections_opened) == (1, 0, min_size)
        assert unwrap(await h.acquire()) is raw

    run(kind, body, min_size=min_size, **settings)


@both
def test_releasing_a_broken_connection_terminates_and_replaces_it(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease.break_()
        await h.release(lease)
        await eventually(lambda: h.stats().idle == 1, what="replacement")
        assert raw.terminated
        assert "rollback" not in h.fake.calls_on(raw)
        s = h.stats()
        assert (s.connections_lost, s.connections_opened, s.size, s.in_use) == (1, 2, 1, 0)
        assert unwrap(await h.acquire()) is not raw

    run(kind, body)


@both
def test_releasing_a_busy_connection_settles_it_and_reuses_it(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease.start_query()
        await h.release(lease)
        await eventually(lambda: h.stats().idle == 1, what="connection back")
        assert h.fake.calls_on(raw).count("settle") == 1
        assert not raw.terminated
        assert unwrap(await h.acquire()) is raw

    run(kind, body)


@both
def test_a_busy_connection_that_will_not_settle_is_discarded_and_replaced(kind: str) -> None:
    async def body(h: Harness) -> None:
        h.fake.settle_result = False
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease.start_query()
        await h.release(lease)  # no exception
        await eventually(lambda: h.stats().idle == 1, what="replacement")
        assert h.fake.calls_on(raw).count("settle") == 1
        assert raw.terminated
        assert unwrap(await h.acquire()) is not raw
        assert h.stats().connections_opened == 2

    run(kind, body)


@both
def test_a_failing_rollback_discards_the_connection_without_raising(kind: str) -> None:
    async def body(h: Harness) -> None:
        h.fake.fail_io("rollback", ConnectionResetError("gone"), times=1)
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease.begin()
        await h.release(lease)
        await eventually(lambda: h.stats().idle == 1, what="replacement")
        assert raw.terminated
        assert unwrap(await h.acquire()) is not raw

    run(kind, body)


@both
def test_a_reset_that_times_out_with_a_bare_timeout_error_is_logged_with_what_timed_out(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Drivers time out with an empty ``TimeoutError()``; the pool's log line says what timed
    out and after how long (Reliability issue, "also seen")."""

    async def body(h: Harness) -> None:
        h.fake.fail_io("rollback", TimeoutError(), times=1)
        await h.open()
        lease = await h.acquire()
        lease.begin()
        await h.release(lease)
        await eventually(lambda: h.stats().idle == 1, what="replacement")

    run(kind, body, reset_timeout=3)
    lines = [r.getMessage() for r in caplog.records if "reset of connection" in r.getMessage()]
    assert lines and "timed out after 3s (reset_timeout)" in lines[0], lines


def test_async_a_rollback_that_hangs_past_reset_timeout_discards_the_connection() -> None:
    async def body(h: Harness) -> None:
        h.fake.hang["rollback"] = Gate()
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease.begin()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await h.release(lease)
        assert loop.time() - start < 1.0
        await eventually(lambda: h.stats().idle == 1, what="replacement")
        assert raw.terminated
        assert unwrap(await h.acquire()) is not raw

    run("async", body, reset_timeout=0.05)


# ---------------------------------------------------------------------------
# other reset modes


@both
def test_reset_full_runs_a_full_reset_on_every_release(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        for i in range(3):
            lease = await h.acquire()
            if i == 1:
                lease.begin()
            await h.release(lease)
            await eventually(lambda: h.stats().idle == 1, what="connection back")
        raw = h.fake.connections[0]
        assert h.fake.calls_on(raw).count("full_reset") == 3
        assert "rollback" not in h.fake.names()
        assert h.stats().resets == 3

    run(kind, body, reset="full")


@both
def test_reset_none_makes_no_round_trip_on_release(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        mark = h.fake.mark()
        for _ in range(3):
            await h.release(await h.acquire())
        await asyncio.sleep(0.02)
        assert set(h.fake.io_calls_since(mark)) & ROUND_TRIPS == set()
        assert h.stats().connections_opened == 1

    run(kind, body, reset=None)


@both
def test_reset_none_never_hands_out_a_connection_still_in_a_transaction(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        lease.begin()
        await h.release(lease)
        await asyncio.sleep(0.02)
        assert "rollback" not in h.fake.names()
        assert "full_reset" not in h.fake.names()
        lease = await h.acquire()
        assert lease.status == CLEAN
        await h.release(lease)

    run(kind, body, reset=None)


@both
def test_a_custom_reset_is_called_with_the_driver_connection_after_the_rollback(
    kind: str,
) -> None:
    seen: list[Any] = []

    def reset(conn: Any) -> None:
        seen.append((type(conn), conn.status))

    async def body(h: Harness) -> None:
        await h.open()
        raw = h.fake.connections[0]
        await h.release(await h.acquire())  # clean: still reset
        lease = await h.acquire()
        lease.begin()
        await h.release(lease)
        await eventually(lambda: len(seen) == 2, what="two resets")
        assert seen == [(type(raw), CLEAN), (type(raw), CLEAN)]  # rolled back first
        assert h.fake.calls_on(raw).count("rollback") == 1
        await eventually(lambda: h.stats().idle == 1, what="connection back")
        assert unwrap(await h.acquire()) is raw

    run(kind, body, reset=reset)


def test_async_a_custom_reset_may_be_a_coroutine_function() -> None:
    seen: list[Any] = []

    async def reset(conn: Any) -> None:
        await asyncio.sleep(0)
        seen.append(conn)

    async def body(h: Harness) -> None:
        await h.open()
        await h.release(await h.acquire())
        assert seen == [h.fake.connections[0]]
        assert h.stats().idle == 1

    run("async", body, reset=reset)


@both
@pytest.mark.parametrize("min_size", [1, 2], ids=["caller-waits", "background"])
def test_a_custom_reset_that_raises_discards_the_connection_and_does_not_raise(
    kind: str, min_size: int
) -> None:
    def reset(conn: Any) -> None:
        raise RuntimeError("reset failed")

    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        await h.release(lease)  # must not raise
        await eventually(lambda: raw.terminated and h.stats().idle == min_size, what="replacement")
        s = h.stats()
        assert (s.in_use, s.size, s.connections_opened) == (0, min_size, min_size + 1)
        leases = [await h.acquire() for _ in range(min_size)]
        assert all(unwrap(x) is not raw for x in leases)

    run(kind, body, reset=reset, min_size=min_size)


# ---------------------------------------------------------------------------
# configure


@both
def test_configure_runs_once_per_new_connection_with_the_driver_connection(kind: str) -> None:
    seen: list[Any] = []

    async def body(h: Harness) -> None:
        await h.open()
        assert len(seen) == 2
        assert all(type(c) is type(h.fake.connections[0]) for c in seen)
        for _ in range(5):
            lease = await h.acquire()
            await h.release(lease)
        assert len(seen) == 2
        await h.call("expire")
        await eventually(lambda: h.stats().connections_opened == 4, what="replacements")
        assert len(seen) == 4
        assert seen == h.fake.connections

    run(kind, body, min_size=2, configure=seen.append)


def test_async_configure_may_be_a_coroutine_function() -> None:
    seen: list[FakeConnection] = []

    async def configure(conn: FakeConnection) -> None:
        await asyncio.sleep(0)
        seen.append(conn)

    async def body(h: Harness) -> None:
        await h.open()
        assert seen == h.fake.connections

    run("async", body, configure=configure)


@both
def test_a_failing_configure_counts_as_a_connect_failure_and_terminates_the_connection(
    kind: str,
) -> None:
    calls: list[Any] = []

    def configure(conn: Any) -> None:
        calls.append(conn)
        if len(calls) == 1:
            raise RuntimeError("SET failed")

    async def body(h: Harness) -> None:
        await h.open(wait=True)
        first, second = h.fake.connections
        assert first.terminated
        assert not second.closed
        s = h.stats()
        assert (s.connections_failed, s.connections_opened, s.idle) == (1, 1, 1)
        assert unwrap(await h.acquire()) is second

    run(kind, body, configure=configure)


def test_async_a_configure_cancelled_by_connect_timeout_terminates_the_connection() -> None:
    gate = Gate()

    async def configure(conn: Any) -> None:
        await gate.wait_async()

    async def body(h: Harness) -> None:
        await h.open(wait=False)
        await eventually(lambda: h.stats().connections_failed >= 1, what="a failure")
        gate.set()
        assert h.fake.connections[0].terminated
        await eventually(lambda: h.stats().idle == 1, what="a connection")

    run("async", body, configure=configure, connect_timeout=0.05)


def test_async_a_connect_that_hangs_past_connect_timeout_counts_as_a_failure() -> None:
    async def body(h: Harness) -> None:
        h.fake.connect_gate = gate = Gate()
        await h.open(wait=False)
        await eventually(lambda: h.stats().connections_failed >= 1, what="a failure")
        gate.set()
        await eventually(lambda: h.stats().idle == 1, what="a connection")

    run("async", body, connect_timeout=0.05)


def test_reset_status_codes_of_the_fake_are_the_adapter_ones() -> None:
    # A guard for the fakes themselves: a lease's helpers set real status codes.
    conn = FakeConnection(1, None, {})
    conn.begin()
    assert conn.status == IN_TRANSACTION
    conn.start_query()
    assert conn.status == BUSY


@both
def test_with_reset_none_a_clean_connection_goes_back_with_no_reset_at_all(kind: str) -> None:
    """``reset=None`` used to send every release down the reset path (a task or an awaited
    coroutine per release, about a fifth slower than ``"auto"`` at conc 100) although there
    is nothing to do for a clean connection."""

    async def body(h: Harness) -> None:
        await h.open()
        for _ in range(3):
            lease = await h.acquire()
            await h.release(lease)
        s = h.stats()
        assert (s.resets, s.idle, s.in_use) == (0, 1, 0)

    run(kind, body, reset=None)
