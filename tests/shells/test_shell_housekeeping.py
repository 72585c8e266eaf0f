"""Both shells: idle shrinking, keepalive pings, lifetimes, expire()."""

from __future__ import annotations

import asyncio
import time

from harness import Harness, both, eventually, run

from pgmarina import unwrap

FAST = {"housekeeping_interval": 0.05}


@both
def test_idle_connections_above_min_size_are_closed_after_max_idle(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        leases = [await h.acquire() for _ in range(3)]
        for lease in leases:
            await h.release(lease)
        assert h.stats().idle == 3
        start = time.monotonic()
        took = await eventually(lambda: h.stats().size == 1, what="shrink to min_size")
        assert took >= 0.15, took
        await asyncio.sleep(0.15)
        s = h.stats()
        assert (s.size, s.idle, s.connections_closed) == (1, 1, 2)  # never below min_size
        closed = [c for c in h.fake.connections if c.closed]
        assert len(closed) == 2 and all(c.closed_gracefully for c in closed)
        assert time.monotonic() - start < 2

    run(kind, body, min_size=1, max_idle=0.2, **FAST)


@both
def test_keepalive_pings_idle_connections(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        raw = h.fake.connections[0]
        await eventually(lambda: h.fake.count("ping", raw) >= 2, what="two pings")
        assert not raw.closed
        assert h.stats().connections_opened == 1
        lease = await h.acquire()
        assert unwrap(lease) is raw
        await h.release(lease)

    run(kind, body, keepalive=0.1, **FAST)


@both
def test_a_connection_that_fails_its_keepalive_ping_is_replaced(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        first = h.fake.connections[0]
        h.fake.fail_io("ping", ConnectionResetError("gone"), times=1)
        await eventually(lambda: first.terminated and h.stats().idle == 1, what="replacement")
        s = h.stats()
        assert (s.checks_failed, s.connections_lost, s.connections_opened) == (1, 1, 2)
        assert unwrap(await h.acquire()) is not first

    run(kind, body, keepalive=0.1, **FAST)


@both
def test_max_lifetime_replaces_idle_connections(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        first = h.fake.connections[0]
        start = time.monotonic()
        await eventually(lambda: first.closed and h.stats().idle == 1, what="replacement")
        assert time.monotonic() - start >= 0.15  # lifetime 0.2 s, jitter up to 10 %
        assert first.closed_gracefully
        assert h.stats().connections_opened >= 2

    run(kind, body, max_lifetime=0.2, **FAST)


@both
def test_max_lifetime_replaces_a_leased_connection_only_when_it_comes_back(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        await asyncio.sleep(0.3)
        assert not raw.closed  # never closed under its borrower
        await h.release(lease)
        await eventually(lambda: raw.closed and h.stats().idle == 1, what="replacement")
        assert unwrap(await h.acquire()) is not raw

    run(kind, body, max_lifetime=0.2, **FAST)


@both
def test_expire_replaces_idle_connections_at_once_and_leased_ones_on_return(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        leased = unwrap(lease)
        old_idle = [c for c in h.fake.connections if c is not leased]
        assert len(old_idle) == 1
        await h.call("expire")
        took = await eventually(
            lambda: old_idle[0].closed and h.stats().idle == 1, what="idle replaced"
        )
        assert took < 0.1  # not waiting for housekeeping (interval 1 s)
        assert not leased.closed
        await h.release(lease)
        await eventually(lambda: leased.closed and h.stats().idle == 2, what="leased replaced")
        s = h.stats()
        assert (s.size, s.connections_opened) == (2, 4)

    run(kind, body, min_size=2, housekeeping_interval=1.0)


@both
def test_idle_connections_found_broken_are_skipped_on_checkout_and_replaced(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        for conn in h.fake.connections:
            conn.break_()  # the driver notices; the pool finds out on checkout
        leases = [await h.acquire() for _ in range(2)]
        assert all(not unwrap(x).closed for x in leases)
        for lease in leases:
            await h.release(lease)
        await eventually(lambda: h.stats().idle == 2, what="refilled")
        assert h.stats().connections_lost == 2

    run(kind, body, min_size=2, **FAST)


@both
def test_check_pings_every_idle_connection_and_replaces_failures(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        h.fake.fail_io("ping", ConnectionResetError("gone"), times=1)
        await h.call("check")
        assert h.fake.count("ping") == 2
        await eventually(lambda: h.stats().idle == 2, what="refilled")
        assert h.stats().checks_failed == 1
        assert sum(c.terminated for c in h.fake.connections) == 1

    run(kind, body, min_size=2)


@both
def test_resize_grows_and_shrinks_the_pool(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        await h.call("resize", 3, 5)
        await eventually(lambda: h.stats().idle == 3, what="grown")
        await h.call("resize", 1, 1)
        await eventually(lambda: h.stats().size == 1, what="shrunk")
        assert h.pool.min_size == 1 and h.pool.max_size == 1

    run(kind, body)
