"""Both shells with ``pgbouncer=True`` (Scale-out issue), on the fake driver: what a release
does there.  The real PgBouncer tests are in tests/integration/test_pgbouncer_*.py."""

from __future__ import annotations

import asyncio

from fakes import CLEAN
from harness import Harness, both, eventually, run

from pgmarina import unwrap


@both
def test_reset_full_behind_pgbouncer_releases_a_clean_connection_with_no_round_trip(
    kind: str,
) -> None:
    """A session reset means nothing behind a transaction-mode bouncer, so ``reset="full"``
    does what ``"auto"`` does: a clean connection goes straight back."""

    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        mark = h.fake.mark()
        await h.release(lease)
        await asyncio.sleep(0.02)
        assert h.fake.io_calls_since(mark) == []
        s = h.stats()
        assert (s.idle, s.in_use, s.resets) == (1, 0, 0)

    run(kind, body, reset="full", pgbouncer=True)


@both
def test_reset_full_behind_pgbouncer_still_rolls_back_an_open_transaction(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease.begin()
        await h.release(lease)
        await eventually(lambda: h.stats().idle == 1, what="connection back")
        assert h.fake.calls_on(raw).count("rollback") == 1
        assert "full_reset" not in h.fake.names()
        assert raw.status == CLEAN and not raw.closed

    run(kind, body, reset="full", pgbouncer=True)
