"""Bad numbers and malformed DSNs, on every driver x shell pair against a real server.

Regression tests for two defects of the Reliability issue:

* 8: durations that passed validation and then broke things (``close(timeout=nan)``,
  ``inf`` and huge timeouts overflowing the thread pool's waits, ``connect_timeout`` and
  ``reset_timeout`` of ``0`` or ``inf``, ``housekeeping_interval=inf``, a thread per
  ``max_connecting`` slot).  The rule every duration now follows is written down in
  :class:`pgmarina._core.PoolConfig`; the fuzz test next door checks it at large.
* 15: libpq's complaint about a malformed DSN quoted the password it could not parse.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import traceback
from typing import Any

import pytest
from conformance_harness import COMBOS, Combo, eventually, run_async

from pgmarina import PoolError

#: The documented bound on waits (``pgmarina._core.config.LONGEST_WAIT``): 30 days.
LONGEST_WAIT = 30 * 24 * 3600.0

# ---------------------------------------------------------------------------------------------
# 8: durations


@run_async
async def test_close_with_a_nan_timeout_is_refused_and_leaves_pool_and_loop_working(
    combo: Combo, pg: Any
) -> None:
    """``close(timeout=nan)`` was accepted: the thread Pool spun at 100 % CPU until the lease
    came back, and AsyncPool put a NaN timer into the loop's heap, after which another pool's
    ``open(wait=True, timeout=3)`` on that loop hung."""
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    conn = await combo.acquire(pool)

    async def release_later() -> None:
        # So that the old code, which waited for the lease, returns instead of hanging.
        await asyncio.sleep(0.5)
        await combo.release(pool, conn)

    releaser = asyncio.create_task(release_later())
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"^timeout must be a number of seconds, not NaN"):
        await combo.close(pool, timeout=math.nan)
    assert time.monotonic() - t0 < 0.4
    assert not pool.closed
    await asyncio.wait_for(releaser, 5)

    async with combo.connection(pool, timeout=5) as again:
        assert await combo.query_value(again, "SELECT 1") == 1
    # Timers on this loop still fire on time: another pool opens and fills, a sleep ends.
    other = await asyncio.wait_for(combo.make_pool(pg, min_size=1, max_size=1), 5)
    t0 = time.monotonic()
    await asyncio.sleep(0.05)
    assert time.monotonic() - t0 < 0.5
    for p in (pool, other):
        await asyncio.wait_for(combo.close(p, timeout=1), 5)
        assert p.stats().size == 0


@pytest.mark.parametrize("value", [math.inf, 1e10, 10**400], ids=["inf", "1e10", "10**400"])
@pytest.mark.parametrize("where", ["pool", "call"])
@run_async
async def test_an_acquire_timeout_of_inf_or_beyond_30_days_waits_without_limit(
    combo: Combo, pg: Any, value: float, where: str
) -> None:
    """The thread Pool accepted ``timeout=inf`` (or ``1e10``), as a setting or per call, and
    then raised ``OverflowError`` from every acquire that had to wait."""
    setting = {"timeout": value} if where == "pool" else {}
    per_call = {"timeout": value} if where == "call" else {}
    pool = await combo.make_pool(pg, min_size=1, max_size=1, **setting)
    if where == "pool":
        assert pool.timeout is None  # inf is kept as "no limit"
    held = await combo.acquire(pool)
    waiter = asyncio.create_task(combo.acquire(pool, **per_call))
    await eventually(lambda: pool.stats().waiting == 1, what="the second caller queues")
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await combo.release(pool, held)
    got = await asyncio.wait_for(waiter, 5)
    assert await combo.query_value(got, "SELECT 1") == 1
    await combo.release(pool, got)
    assert pool.stats().timeouts == 0


@pytest.mark.parametrize("value", [math.inf, 1e10], ids=["inf", "1e10"])
@run_async
async def test_reset_timeout_inf_resets_and_checks_without_limit_and_close_returns(
    combo: Combo, pg: Any, value: float
) -> None:
    """``reset_timeout=inf`` killed the thread Pool's watchdog thread with ``OverflowError``
    on the first reset, and made ``close()`` raise ``OverflowError`` as well."""
    pool = await combo.make_pool(
        pg, min_size=1, max_size=1, reset_timeout=value, check_window=0
    )
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await combo.begin(conn)
    await combo.release(pool, conn)  # dirty: rolled back under the (unlimited) reset timeout
    conn = await combo.acquire(pool)  # check_window=0: pinged under the same timeout
    assert combo.backend_pid(conn) == pid
    assert not combo.in_transaction(conn)
    await combo.release(pool, conn)
    s = pool.stats()
    assert (s.connections_opened, s.checks_failed) == (1, 0)
    t0 = time.monotonic()
    await combo.close(pool, timeout=5)
    assert time.monotonic() - t0 < 2
    assert pool.stats().size == 0


@pytest.mark.parametrize("kind", ["AsyncPool", "Pool"])
@pytest.mark.parametrize("value", [math.inf, LONGEST_WAIT * 2])
def test_a_housekeeping_interval_of_inf_is_refused_naming_it(
    pg: Any, kind: str, value: float
) -> None:
    """``housekeeping_interval=inf`` was accepted, killed the thread Pool's housekeeping
    thread with ``OverflowError`` and made ``close()`` raise.  Housekeeping refills the pool,
    so it cannot be switched off: the interval is at most 30 days."""
    combo = next(c for c in COMBOS if c.pool_class.__name__ == kind)
    with pytest.raises(ValueError, match=r"^housekeeping_interval must be at most 2592000"):
        combo.pool_class(pg.dsn, driver=combo.driver, housekeeping_interval=value)


@run_async
async def test_a_housekeeping_interval_of_30_days_keeps_the_pool_serving_and_closing(
    combo: Combo, pg: Any
) -> None:
    """The longest housekeeping interval allowed neither overflows a wait nor delays close."""
    pool = await combo.make_pool(pg, min_size=1, max_size=1, housekeeping_interval=LONGEST_WAIT)
    async with combo.connection(pool) as conn:
        assert await combo.query_value(conn, "SELECT 1") == 1
    t0 = time.monotonic()
    await combo.close(pool, timeout=5)
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("value", [math.inf, 1e10, 10**400], ids=["inf", "1e10", "10**400"])
@run_async
async def test_connect_timeout_inf_means_no_limit_and_connects_in_every_shell(
    combo: Combo, pg: Any, value: float
) -> None:
    """``connect_timeout=inf`` made every connect of the thread Pool fail with
    ``OverflowError`` (libpq's ``connect_timeout`` is an integer), so it never filled."""
    pool = await combo.make_pool(pg, opened=False, min_size=1, max_size=2, connect_timeout=value)
    await asyncio.wait_for(combo.open(pool, wait=True, timeout=3), 10)
    held = [await combo.acquire(pool, timeout=5) for _ in range(2)]  # a second connect
    for conn in held:
        await combo.release(pool, conn)
    s = pool.stats()
    assert (s.connections_opened, s.connections_failed) == (2, 0)


@pytest.mark.parametrize("value", [0, 0.0, -0.0])
@pytest.mark.parametrize("arg", ["connect_timeout", "reset_timeout"])
def test_zero_connect_or_reset_timeout_is_refused_the_same_way_by_every_pair(
    pg: Any, arg: str, value: float
) -> None:
    """``connect_timeout=0`` meant "no limit" to the thread Pool (libpq's reading) and "fail
    at once" to AsyncPool; ``reset_timeout=0`` made every reset fail, so every connection
    that came back dirty was thrown away.  Both are now refused, in the same words."""
    messages = set()
    for combo in COMBOS:
        with pytest.raises(ValueError) as info:
            combo.pool_class(pg.dsn, driver=combo.driver, **{arg: value})
        messages.add(str(info.value))
    assert messages == {f"{arg} must be > 0 seconds, got {value!r}"}


def _pool_threads(pool: Any) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{pool.name} ")]


@run_async
async def test_max_connecting_3000_does_not_start_a_thread_per_connect(
    combo: Combo, pg: Any
) -> None:
    """``max_connecting=3000`` made the thread Pool start 3,001 worker threads at open.  A
    few workers are enough: connects beyond them queue, and every caller is still served."""
    pool = await combo.make_pool(pg, min_size=0, max_size=20, max_connecting=3000)
    held = await asyncio.wait_for(
        asyncio.gather(*(combo.acquire(pool, timeout=10) for _ in range(20))), 20
    )
    threads = _pool_threads(pool)
    # Workers (at most 8 connecting, one spare), housekeeping and the watchdog.
    assert len(threads) <= (11 if not combo.is_async else 0), [t.name for t in threads]
    for conn in held:
        await combo.release(pool, conn)
    s = pool.stats()
    assert (s.size, s.connections_opened, s.connections_failed) == (20, 20, 0)
    await combo.close(pool, timeout=5)
    await eventually(lambda: not _pool_threads(pool), what="the pool's threads end")


# ---------------------------------------------------------------------------------------------
# 15: secrets in constructor errors

SECRET = "S3cr3tPw"

MALFORMED = [
    pytest.param(f"host=127.0.0.1 port=1 password=ab {SECRET} dbname=postgres", {}, id="kv-space"),
    pytest.param(f"host=127.0.0.1 port=1 PASSWORD=ab {SECRET}", {}, id="kv-upper-space"),
    pytest.param(f"host=127.0.0.1 port=1 password='{SECRET}", {}, id="kv-unterminated-quote"),
    pytest.param(f"host=127.0.0.1 port=1 {SECRET}", {}, id="kv-bare-word"),
    pytest.param(f"postgresql://postgres:{SECRET} x@127.0.0.1:1/postgres", {}, id="uri-space"),
    pytest.param(f"postgresql://postgres:{SECRET}%zz@127.0.0.1:1/postgres", {}, id="uri-percent"),
    pytest.param(f"postgresql://postgres:{SECRET}@[::1/postgres", {}, id="uri-ipv6"),
    pytest.param(
        f"postgresql://postgres@127.0.0.1:1/postgres?password={SECRET}&x", {}, id="uri-query"
    ),
    pytest.param(
        "postgresql://postgres@127.0.0.1:1/postgres",
        {"password": f"ab {SECRET}", "bogus_option": "1"},
        id="uri-with-keywords",
    ),
]


def _shown(exc: BaseException) -> str:
    """Everything an error shows: message, repr and traceback of it and of its whole chain."""
    parts = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        parts += [str(e), repr(e), *(repr(a) for a in e.args)]
        todo += [e.__cause__, e.__context__]
    parts.append("".join(traceback.format_exception(exc)))
    return "\n".join(parts)


@pytest.mark.parametrize(("dsn", "keywords"), MALFORMED)
@run_async
async def test_a_malformed_dsn_never_shows_its_password_in_errors_chains_reprs_or_logs(
    combo: Combo, pg: Any, dsn: str, keywords: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """libpq's complaint about a malformed DSN was passed on verbatim, and it quotes the piece
    it could not parse: ``unexpected spaces found in "S3cr3tPw x"``, ``missing "=" after
    "S3cr3tPw"``.  Neither the error, nor anything in its ``__cause__``/``__context__`` chain,
    nor the pool's repr, nor a log line may show the password."""
    caplog.set_level(logging.DEBUG)
    try:
        pool = combo.pool_class(
            dsn, driver=combo.driver, timeout=1, fail_fast_after=0.2, connect_timeout=2,
            **keywords,
        )
    except (TypeError, ValueError) as exc:
        assert str(exc).startswith(("dsn ", "connect keyword")), exc
        assert SECRET not in _shown(exc)
    else:
        # asyncpg reads a DSN only when it connects (so do the psycopgs, for what libpq
        # parses but cannot use): the connect errors must not show it either.
        assert SECRET not in repr(pool)
        with pytest.raises(PoolError) as info:
            await combo.open(pool, wait=True, timeout=1)
        assert SECRET not in _shown(info.value)
        assert SECRET not in repr(pool)
    assert SECRET not in caplog.text


# ---------------------------------------------------------------------------------------------
# Found by the fuzz test next door


@run_async
async def test_a_pool_closed_right_after_open_counts_no_connect_left_over(
    combo: Combo, pg: Any
) -> None:
    """AsyncPool's close cancelled connect tasks that had not started yet; a task cancelled
    before its first step never runs its ``finally``, so their entries stayed "connecting"
    for ever: a closed pool reported ``size=2, connecting=2``."""
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, opened=False, min_size=3, max_size=3)
    await combo.open(pool, wait=False)
    await combo.close(pool, timeout=1)
    s = pool.stats()
    assert (s.size, s.connecting, s.idle) == (0, 0, 0), s
    await admin.wait_backends(combo.app_of(pool), 0)
