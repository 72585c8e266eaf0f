"""Both shells: what the release does with what a lease noted or made (Reliability items 6, 7).

On fake drivers, so the order of the release's steps and every release path can be checked
exactly; the real drivers' side is in tests/conformance/test_conformance_lease_leftovers.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes import CLEAN, FakeAsyncAdapter, FakeSyncAdapter
from harness import Harness, both, eventually, run

from pgmarina import Lease, reset_on_release, unwrap
from pgmarina._lease import set_made


class VoidRecordingLease(Lease):
    """A lease whose ``_made`` is a list that ``_void`` appends the driver connection to."""

    __slots__ = ()

    @staticmethod
    def _void(con: Any, made: Any) -> None:
        made.append(con)


@pytest.fixture
def recording_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeAsyncAdapter, "lease_class", VoidRecordingLease)
    monkeypatch.setattr(FakeSyncAdapter, "lease_class", VoidRecordingLease)


def _record_undo(h: Harness) -> None:
    """Make the fake adapter record ``undo`` calls (the base adapter's is a silent no-op)."""
    fake = h.fake

    def undo(conn: Any, undo: list[Any]) -> Any:
        fake.record("undo", conn, list(undo))
        if h.is_async:
            return asyncio.sleep(0)
        return None

    fake.undo = undo  # type: ignore[method-assign]


@both
def test_noted_changes_are_undone_after_the_rollback_of_a_transaction_left_open(
    kind: str,
) -> None:
    # psycopg refuses to change autocommit inside a transaction: the undo used to run first.
    async def body(h: Harness) -> None:
        _record_undo(h)
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease._note(("attributes", "as the lease found them"))
        lease.begin()
        await h.release(lease)
        await eventually(lambda: h.stats().idle == 1, what="connection back")
        calls = [name for name in h.fake.calls_on(raw) if name in ("rollback", "undo")]
        assert calls == ["rollback", "undo"]
        assert raw.status == CLEAN

    run(kind, body)


@both
def test_reset_on_release_gives_that_lease_alone_a_full_reset(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        reset_on_release(lease, "full")
        await h.release(lease)
        await eventually(lambda: h.stats().idle == 1, what="connection back")
        assert h.fake.calls_on(raw).count("full_reset") == 1
        assert "rollback" not in h.fake.calls_on(raw)

        lease = await h.acquire()
        mark = h.fake.mark()
        await h.release(lease)
        assert h.fake.io_calls_since(mark) == []  # the next lease is back to "auto"
        assert h.stats().resets == 1

    run(kind, body)


@both
@pytest.mark.parametrize("path", ["clean", "in transaction", "broken"])
def test_what_a_lease_made_is_voided_once_on_every_release_path(
    kind: str, path: str, recording_leases: None
) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        voided: list[Any] = []
        set_made(lease, voided)
        if path == "in transaction":
            lease.begin()
        elif path == "broken":
            raw.break_()
        await h.release(lease)
        assert voided == [raw]

    run(kind, body, min_size=0)


@both
@pytest.mark.parametrize("path", ["clean", "in transaction"])
def test_what_a_lease_made_is_voided_once_when_its_with_block_ends(
    kind: str, path: str, recording_leases: None
) -> None:
    voided: list[Any] = []
    raws: list[Any] = []

    def use(conn: Any) -> None:
        raws.append(unwrap(conn))
        set_made(conn, voided)
        if path == "in transaction":
            conn.begin()

    async def body(h: Harness) -> None:
        await h.open()
        if h.is_async:
            async with h.pool.connection() as conn:
                use(conn)
        else:

            def block() -> None:
                with h.pool.connection() as conn:
                    use(conn)

            await asyncio.to_thread(block)
        assert voided == raws
        await eventually(lambda: h.stats().idle == 1, what="connection back")

    run(kind, body)
