"""Both shells: repr, and passwords never shown in repr, logs or pool errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from harness import Harness, both, run

from pgmarina import PoolConnectError, PoolTimeout

SECRET = "s3cret"
DSN = f"postgresql://u:{SECRET}@h/db"


def _leaky_error(dsn: str | None, kwargs: Mapping[str, Any]) -> BaseException:
    # Some drivers echo what they were given; the pool must not pass it on.
    return ConnectionRefusedError(f"could not connect to {dsn} (password={kwargs.get('password')})")


@both
def test_repr_is_one_line_with_name_driver_and_sizes(kind: str) -> None:
    async def body(h: Harness) -> None:
        text = repr(h.pool)
        assert "\n" not in text
        assert "'orders'" in text
        assert h.fake.name in text
        assert "h/db" in text
        assert "not open" in text
        assert "size 0/4" in text
        await h.open()
        lease = await h.acquire()
        text = repr(h.pool)
        assert "\n" not in text
        assert "size 2/4" in text and "1 idle" in text and "1 in use" in text
        await h.release(lease)
        await h.call("close")
        assert "closed" in repr(h.pool)

    run(kind, body, DSN, name="orders", min_size=2, max_size=4)


@both
def test_repr_never_shows_a_password_from_the_dsn_or_the_connect_keywords(kind: str) -> None:
    async def body(h: Harness) -> None:
        assert SECRET not in repr(h.pool)
        assert SECRET not in str(h.pool)
        await h.open()
        lease = await h.acquire()
        assert SECRET not in repr(h.pool)
        assert SECRET not in repr(lease)
        assert SECRET not in repr(h.stats())
        await h.release(lease)
        assert SECRET not in repr(lease)

    run(kind, body, DSN, password=SECRET)


@both
def test_repr_shows_host_and_database_from_keywords_without_the_password(kind: str) -> None:
    async def body(h: Harness) -> None:
        text = repr(h.pool)
        assert "dbhost:6432/app" in text
        assert SECRET not in text

    run(kind, body, None, host="dbhost", port=6432, dbname="app", password=SECRET)


@both
def test_logs_never_show_the_password_even_when_the_connect_error_contains_the_dsn(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pgmarina")

    async def body(h: Harness) -> None:
        h.fake.connect_error = _leaky_error
        h.fake.fail_connects(3)
        await h.open(wait=True)
        lease = await h.acquire()
        lease.begin()
        h.fake.fail_io("rollback", ConnectionResetError(f"lost {DSN}"), times=1)
        await h.release(lease)  # reset fails: logged
        await h.call("close")

    run(kind, body, DSN, password=SECRET, timeout=5)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("pgmarina")]
    assert sum("connect failed" in m for m in messages) == 3, messages
    assert any("could not connect to postgresql://u:" in m for m in messages)
    for record in caplog.records:
        assert SECRET not in record.getMessage()
    assert SECRET not in caplog.text


@both
def test_a_pool_timeout_never_shows_the_password_from_a_connect_error(kind: str) -> None:
    async def body(h: Harness) -> None:
        h.fake.connect_error = _leaky_error
        h.fake.fail_connects(None)
        await h.open(wait=False)
        with pytest.raises(PoolTimeout) as info:
            await h.acquire(timeout=0.1)
        assert "could not connect" in str(info.value)
        assert SECRET not in str(info.value)

    run(kind, body, DSN, password=SECRET)


@both
def test_a_fail_fast_pool_connect_error_never_shows_the_password(kind: str) -> None:
    async def body(h: Harness) -> None:
        h.fake.connect_error = _leaky_error
        h.fake.fail_connects(None)
        await h.open(wait=False)
        await asyncio.sleep(0.1)
        with pytest.raises(PoolConnectError) as info:
            await h.acquire(timeout=1)
        assert "could not connect" in str(info.value)
        assert SECRET not in str(info.value)

    run(kind, body, DSN, password=SECRET, fail_fast_after=0.05)


@both
def test_wait_errors_never_show_the_password_from_a_connect_error(kind: str) -> None:
    async def body(h: Harness) -> None:
        h.fake.connect_error = _leaky_error
        h.fake.fail_connects(None)
        with pytest.raises(PoolConnectError) as info:
            await h.open(wait=True)
        assert SECRET not in str(info.value)

    run(kind, body, DSN, password=SECRET, fail_fast_after=0.05)
