"""Both shells: connect failures, backoff, fail fast, acquire timeouts."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from fakes import Gate
from harness import Harness, both, eventually, run

from pgmarina import PoolConnectError, PoolTimeout, unwrap

# ---------------------------------------------------------------------------
# reconnect


@both
def test_a_waiter_with_a_long_timeout_is_served_once_failing_connects_recover(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        h.fake.fail_connects(3)
        await h.open(wait=False)
        start = time.monotonic()
        lease = await h.acquire(timeout=5)
        assert time.monotonic() - start < 1.0
        assert unwrap(lease) is h.fake.connections[0]
        s = h.stats()
        assert (s.connections_failed, s.connections_opened, s.timeouts) == (3, 1, 0)
        await h.release(lease)

    run(kind, body, min_size=0)


def _gaps(attempts: list[tuple[float, float, bool]]) -> list[float]:
    """Time from the end of each failed attempt to the start of the next."""
    ordered = sorted(attempts)
    return [b[0] - a[1] for a, b in itertools.pairwise(ordered) if not a[2]]


@both
def test_retry_delays_grow_exponentially_while_connects_fail(kind: str) -> None:
    # Default backoff: 10 ms, doubling, each delay jittered down to half.
    async def body(h: Harness) -> None:
        h.fake.fail_connects(5)
        await h.open(wait=True)
        gaps = _gaps(h.fake.attempts)
        assert len(gaps) == 5
        for k, gap in enumerate(gaps):
            nominal = 0.01 * 2**k
            assert nominal * 0.5 - 0.002 <= gap <= nominal + 0.05, (k, gaps)
        assert gaps[4] > 2 * gaps[0], gaps
        assert h.stats().connections_failed == 5

    run(kind, body, timeout=5)


@both
def test_retry_delays_never_exceed_backoff_max(kind: str) -> None:
    async def body(h: Harness) -> None:
        h.fake.fail_connects(6)
        await h.open(wait=True)
        gaps = _gaps(h.fake.attempts)
        assert len(gaps) == 6
        assert max(gaps) <= 0.03 + 0.03, gaps

    run(kind, body, timeout=5, backoff_initial=0.01, backoff_max=0.03)


@both
def test_backoff_settings_are_pool_settings_not_connect_keywords(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        assert h.fake.connections[0].kwargs == {}

    run(kind, body, backoff_initial=0.02, backoff_max=0.5)


@both
def test_only_one_connect_is_in_flight_while_failing_even_with_twenty_waiters(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        fake = h.fake
        fake.fail_connects(None)
        fake.connect_delay = 0.01
        await h.open(wait=False)
        waiters = [h.spawn("acquire", timeout=0.4) for _ in range(20)]
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, PoolTimeout) for r in results), results
        attempts = sorted(fake.attempts)
        first_failure = min(end for _, end, _ in attempts)
        later = [a for a in attempts if a[0] >= first_failure]
        assert len(later) >= 3, attempts
        for a, b in itertools.pairwise(later):
            assert b[0] >= a[1], f"connects overlapped while failing: {a} {b}"
        # and none of the later ones overlapped an earlier one either
        for start, _, _ in later:
            assert all(end <= start for s, end, _ in attempts if s < first_failure)
        assert h.stats().waiting == 0
        assert h.stats().timeouts == 20

    run(kind, body, min_size=0, max_size=20, max_connecting=4)


@both
def test_a_connect_in_flight_when_its_waiter_gives_up_still_completes_into_an_idle_connection(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        h.fake.connect_gate = gate = Gate()
        await h.open(wait=False)
        with pytest.raises(PoolTimeout):
            await h.acquire(timeout=0.05)
        assert h.fake.in_flight == 1
        assert h.stats().waiting == 0
        gate.set()
        await eventually(lambda: h.stats().idle == 1, what="idle connection")
        s = h.stats()
        assert (s.connecting, s.size, s.connections_opened) == (0, 1, 1)
        assert not h.fake.connections[0].closed
        lease = await h.acquire(timeout=0)
        assert unwrap(lease) is h.fake.connections[0]

    run(kind, body, min_size=0)


# ---------------------------------------------------------------------------
# fail fast and reconnect_failed


@both
def test_after_failing_for_fail_fast_after_acquire_raises_pool_connect_error_at_once(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        h.fake.fail_connects(None)
        await h.open(wait=False)
        # Before fail_fast_after, a caller waits out its timeout.
        with pytest.raises(PoolTimeout):
            await h.acquire(timeout=0.05)
        await asyncio.sleep(0.3)
        start = time.monotonic()
        with pytest.raises(PoolConnectError) as info:
            await h.acquire(timeout=5)
        assert time.monotonic() - start < 0.05
        cause = info.value.__cause__
        assert isinstance(cause, ConnectionRefusedError)
        assert any(cause is e for e in h.fake.errors_raised)
        assert h.stats().waiting == 0

    run(kind, body, fail_fast_after=0.2)


@both
def test_open_with_wait_raises_pool_connect_error_after_fail_fast_after(kind: str) -> None:
    async def body(h: Harness) -> None:
        h.fake.fail_connects(None)
        start = time.monotonic()
        with pytest.raises(PoolConnectError) as info:
            await h.open(wait=True)
        assert 0.15 <= time.monotonic() - start < 1.0
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert h.pool.closed

    run(kind, body, fail_fast_after=0.2, timeout=5)


@both
def test_a_pool_that_recovers_stops_failing_fast(kind: str) -> None:
    async def body(h: Harness) -> None:
        h.fake.fail_connects(None)
        await h.open(wait=False)
        await asyncio.sleep(0.15)
        with pytest.raises(PoolConnectError):
            await h.acquire(timeout=1)
        h.fake.heal()
        await eventually(lambda: h.stats().idle == 1, what="recovery")
        lease = await h.acquire(timeout=1)
        await h.release(lease)

    run(kind, body, fail_fast_after=0.1)


@both
def test_reconnect_failed_is_called_once_per_outage_after_reconnect_timeout(kind: str) -> None:
    told: list[tuple[Any, float]] = []

    async def body(h: Harness) -> None:
        h.fake.fail_connects(None)
        start = time.monotonic()
        await h.open(wait=False)
        await eventually(lambda: told, what="reconnect_failed")
        assert told[0][0] is h.pool
        assert told[0][1] - start >= 0.19
        await asyncio.sleep(0.3)
        assert len(told) == 1  # once, although the pool keeps retrying
        h.fake.heal()
        await eventually(lambda: h.stats().idle == 1, what="recovery")
        # a second outage tells again
        h.fake.fail_connects(None)
        await h.call("expire")
        await eventually(lambda: len(told) == 2, what="second reconnect_failed")

    run(
        kind,
        body,
        reconnect_timeout=0.2,
        reconnect_failed=lambda pool: told.append((pool, time.monotonic())),
    )


def test_async_reconnect_failed_may_be_a_coroutine_function() -> None:
    told: list[Any] = []

    async def reconnect_failed(pool: Any) -> None:
        await asyncio.sleep(0)
        told.append(pool)

    async def body(h: Harness) -> None:
        h.fake.fail_connects(None)
        await h.open(wait=False)
        await eventually(lambda: told, what="reconnect_failed")
        assert told == [h.pool]

    run("async", body, reconnect_timeout=0.05, reconnect_failed=reconnect_failed)


@both
def test_a_reconnect_failed_callback_that_raises_does_not_stop_reconnecting(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def reconnect_failed(pool: Any) -> None:
        raise RuntimeError("pager down")

    async def body(h: Harness) -> None:
        h.fake.fail_connects(None)
        await h.open(wait=False)
        await eventually(
            lambda: any("reconnect_failed" in r.getMessage() for r in caplog.records),
            what="logged callback error",
        )
        h.fake.heal()
        await eventually(lambda: h.stats().idle == 1, what="recovery")

    run(kind, body, reconnect_timeout=0.05, reconnect_failed=reconnect_failed)


# ---------------------------------------------------------------------------
# acquire timeout


@both
def test_acquire_on_an_exhausted_pool_raises_pool_timeout_after_the_timeout(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        start = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            await h.acquire(timeout=0.1)
        elapsed = time.monotonic() - start
        assert 0.095 <= elapsed < 0.2, elapsed
        assert isinstance(info.value, TimeoutError)
        assert info.value.__cause__ is None
        s = h.stats()
        assert (s.timeouts, s.waiting, s.in_use) == (1, 0, 1)
        await h.release(held)
        assert h.stats().idle == 1

    run(kind, body, max_size=1)


@both
def test_acquire_without_timeout_uses_the_pool_timeout(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        start = time.monotonic()
        with pytest.raises(PoolTimeout):
            await h.acquire()
        assert 0.095 <= time.monotonic() - start < 0.2
        await h.release(held)

    run(kind, body, max_size=1, timeout=0.1)


@both
def test_acquire_with_timeout_zero_on_an_exhausted_pool_fails_at_once(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        start = time.monotonic()
        with pytest.raises(PoolTimeout):
            await h.acquire(timeout=0)
        assert time.monotonic() - start < 0.05
        assert h.stats().waiting == 0
        await h.release(held)

    run(kind, body, max_size=1)


@both
def test_a_pool_timeout_while_failing_to_connect_names_the_last_connect_error(kind: str) -> None:
    async def body(h: Harness) -> None:
        h.fake.fail_connects(None)
        await h.open(wait=False)
        start = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            await h.acquire(timeout=0.15)
        assert 0.14 <= time.monotonic() - start < 0.3
        assert "ConnectionRefusedError" in str(info.value)
        assert "Connection refused" in str(info.value)
        cause = info.value.__cause__
        assert isinstance(cause, ConnectionRefusedError)
        assert any(cause is e for e in h.fake.errors_raised)
        assert h.stats().timeouts == 1

    run(kind, body, min_size=0)


@both
def test_a_waiter_is_served_when_a_lease_comes_back_before_its_timeout(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        waiter = h.spawn("acquire", timeout=2)
        await eventually(lambda: h.stats().waiting == 1, what="queued")
        await h.release(held)
        lease = await waiter
        assert unwrap(lease) is h.fake.connections[0]
        s = h.stats()
        assert (s.waiting, s.waited_acquires, s.acquires, s.timeouts) == (0, 1, 2, 0)
        await h.release(lease)

    run(kind, body, max_size=1)


@both
def test_waiters_are_served_in_arrival_order(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        order: list[int] = []
        leases: list[Any] = []

        async def wait_then_note(i: int) -> None:
            lease = await h.acquire(timeout=3)
            order.append(i)
            leases.append(lease)
            await asyncio.sleep(0.005)
            await h.release(lease)

        tasks = []
        for i in range(5):
            tasks.append(asyncio.ensure_future(wait_then_note(i)))
            await eventually(lambda i=i: h.stats().waiting == i + 1, what="queued")
        await h.release(held)
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]

    run(kind, body, max_size=1)


@both
def test_max_waiting_refuses_one_caller_too_many_at_once(kind: str) -> None:
    from pgmarina import TooManyWaiters

    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        first = h.spawn("acquire", timeout=2)
        await eventually(lambda: h.stats().waiting == 1, what="queued")
        start = time.monotonic()
        with pytest.raises(TooManyWaiters):
            await h.acquire(timeout=2)
        assert time.monotonic() - start < 0.05
        await h.release(held)
        await h.release(await first)
        assert h.stats().too_many_waiters == 1

    run(kind, body, max_size=1, max_waiting=1)


# ---------------------------------------------------------------------------
# prefill=False (SQLAlchemy's QueuePool way)


@both
def test_without_prefill_open_waits_for_nothing_and_connects_only_for_callers(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        await h.open(wait=True)  # nothing to wait for
        await h.call("wait", timeout=0.5)
        assert h.fake.attempts == [] and h.stats().size == 0
        first = await h.acquire(timeout=2)
        second = await h.acquire(timeout=2)
        assert len(h.fake.attempts) == 2, "one connect per caller, none ahead of them"
        await h.release(first)
        await h.release(second)
        await asyncio.sleep(0.05)
        s = h.stats()
        assert (s.size, s.idle, s.connections_opened) == (2, 2, 2)

    run(kind, body, min_size=3, prefill=False)


# ---------------------------------------------------------------------------
# _lend_waits_for_connect (SQLAlchemy's pool_timeout)


@both
@pytest.mark.parametrize("waits_for_connect", [True, False])
def test_an_integrations_acquire_may_outwait_the_timeout_for_its_own_connect(
    kind: str, waits_for_connect: bool
) -> None:
    """With ``_lend_waits_for_connect`` (SQLAlchemy's pool sets it), a ``_lend``
    the pool has room to connect for waits up to ``connect_timeout``, not the
    pool's ``timeout``; one waiting for a full pool still gives up at
    ``timeout``.  Without it, ``timeout`` bounds both."""

    async def body(h: Harness) -> None:
        h.pool._lend_waits_for_connect = waits_for_connect
        await h.open(wait=True)
        gate = Gate()
        h.fake.connect_gate = gate
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, gate.set)  # the connect takes 0.3 s, the timeout is 0.05 s
        start = time.monotonic()
        if not waits_for_connect:
            with pytest.raises(PoolTimeout):
                await h.call("_lend")
            assert time.monotonic() - start < 0.25
            return
        entry = await h.call("_lend")
        assert 0.25 < time.monotonic() - start < 2
        assert entry.conn is h.fake.connections[0]
        start = time.monotonic()
        with pytest.raises(PoolTimeout):  # full now: only the pool's timeout
            await h.call("_lend")
        assert time.monotonic() - start < 0.25
        back = await h.call("_take_back", entry)
        assert back is None
        assert h.stats().in_use == 0

    run(kind, body, min_size=0, max_size=1, timeout=0.05, connect_timeout=5)
