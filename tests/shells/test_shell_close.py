"""Both shells: closing with leases out, waiters and connects in flight."""

from __future__ import annotations

import asyncio
import time

import pytest
from fakes import Gate
from harness import Harness, both, eventually, run

from pgmarina import PoolClosed, unwrap


@both
def test_close_closes_idle_connections_gracefully(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        await h.call("close")
        assert len(h.fake.connections) == 2
        for conn in h.fake.connections:
            assert conn.closed_gracefully
            assert not conn.terminated
        s = h.stats()
        assert (s.size, s.idle, s.connections_closed) == (0, 0, 2)

    run(kind, body, min_size=2)


@both
def test_close_terminates_a_lease_still_out_after_its_timeout(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        start = time.monotonic()
        await h.call("close", timeout=0.2)
        elapsed = time.monotonic() - start
        assert 0.19 <= elapsed < 0.6, elapsed
        assert raw.terminated
        assert h.fake.count("terminate", raw) >= 1
        assert h.stats().size == 0
        await h.release(lease)  # the late return is ignored, not an error
        assert lease.released
        s = h.stats()
        assert (s.size, s.in_use, s.idle) == (0, 0, 0)

    run(kind, body)


@both
def test_close_waits_for_a_lease_returned_within_its_timeout_and_does_not_terminate_it(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        start = time.monotonic()
        closing = h.spawn("close", timeout=2)
        await asyncio.sleep(0.1)
        assert not closing.done()
        await h.release(lease)
        await asyncio.wait_for(closing, 1)
        assert 0.09 <= time.monotonic() - start < 0.6
        assert raw.closed_gracefully
        assert not raw.terminated
        assert h.stats().size == 0

    run(kind, body)


@both
def test_close_fails_queued_waiters_with_pool_closed(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        waiters = [h.spawn("acquire", timeout=5) for _ in range(3)]
        await eventually(lambda: h.stats().waiting == 3, what="queued")
        start = time.monotonic()
        closing = h.spawn("close", timeout=2)
        results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 1)
        assert time.monotonic() - start < 0.2
        assert all(isinstance(r, PoolClosed) for r in results), results
        assert h.stats().waiting == 0
        await h.release(held)
        await asyncio.wait_for(closing, 1)
        assert h.fake.connections[0].closed_gracefully

    run(kind, body, max_size=1)


@both
def test_a_connect_that_finishes_after_close_is_terminated_not_kept(kind: str) -> None:
    async def body(h: Harness) -> None:
        h.fake.connect_gate = gate = Gate()
        await h.open(wait=False)
        await eventually(lambda: h.fake.in_flight == 1, what="connect started")
        closing = h.spawn("close", timeout=1)
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.wait_for(closing, 3)
        await asyncio.sleep(0.05)
        for conn in h.fake.connections:  # the async shell cancels: none made
            assert conn.closed
        s = h.stats()
        assert (s.size, s.connecting, s.idle) == (0, 0, 0)

    run(kind, body)


def test_async_close_cancels_a_connect_in_flight_at_once() -> None:
    async def body(h: Harness) -> None:
        h.fake.connect_gate = Gate()
        await h.open(wait=False)
        await eventually(lambda: h.fake.in_flight == 1, what="connect started")
        start = time.monotonic()
        await h.call("close", timeout=1)
        assert time.monotonic() - start < 0.2
        assert h.fake.in_flight == 0
        assert h.fake.connections == []
        assert h.stats().size == 0

    run("async", body)


@both
def test_terminate_drops_every_connection_including_leased_ones(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        h.pool.terminate()
        assert all(c.terminated for c in h.fake.connections)
        assert h.pool.closed
        with pytest.raises(PoolClosed):
            await h.acquire(timeout=0.1)
        await h.release(lease)
        assert h.stats().size == 0

    run(kind, body, min_size=2)
