"""What every fault scenario checks, written once.

A scenario sends requests at a pool while something goes wrong, then asserts the pool's
promise (the invariants of the fault suite):

1. every request either succeeded or raised a clear error (a pgmarina error that says what
   happened) within its timeout: :class:`Ledger` records each request, :meth:`Ledger.check`
   asserts it;
2. once the fault is over, the pool is back at ``min_size`` with nothing lent out, queued or
   connecting, and its stats add up (``size == idle``, ``opened - closed == size``);
3. the server agrees: exactly ``size`` sessions carry the pool's application name, none of
   them idle in a transaction (:func:`assert_settled`).

Requests come in crowds (:func:`crowd`): tasks on the test's event loop for the asyncio pool,
real threads started at one barrier for the thread pool, so that "arriving at once" means
the same for both.  The harness's ``combo.connection`` runs sync calls on a 64-thread
executor, which would queue a larger crowd before it reaches the pool and count that queueing
as waiting; each thread here times its own request instead.

:func:`measure` prints one ``FAULTS <scenario> key=value ...`` line per measurement (shown
with ``pytest -rP``, or ``-s``); the numbers in the issue's closing note come from these.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from conformance_harness import Admin, Combo, eventually

from pgmarina import PoolError

__all__ = [
    "Ledger",
    "Outcome",
    "Peaks",
    "assert_settled",
    "chain",
    "chain_text",
    "crowd",
    "measure",
    "one_request",
    "watch_peaks",
]


@dataclass(frozen=True)
class Outcome:
    """One request: when it started and ended (monotonic), and what it raised, if anything."""

    started: float
    ended: float
    timeout: float
    error: BaseException | None

    @property
    def elapsed(self) -> float:
        return self.ended - self.started


class Ledger:
    """Every request of a scenario, thread-safe."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()

    def add(self, started: float, timeout: float, error: BaseException | None) -> None:
        outcome = Outcome(started, time.monotonic(), timeout, error)
        with self._lock:
            self.outcomes.append(outcome)

    def __len__(self) -> int:
        return len(self.outcomes)

    @property
    def ok(self) -> int:
        return sum(1 for o in self.outcomes if o.error is None)

    def errors(self, kind: type[BaseException] = BaseException) -> list[BaseException]:
        return [o.error for o in self.outcomes if isinstance(o.error, kind)]

    def kinds(self) -> Counter[str]:
        """``{"ok": n, "PoolTimeout": m, ...}``."""
        return Counter("ok" if o.error is None else type(o.error).__name__ for o in self.outcomes)

    def first_ok_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the end of the first success that ended after it."""
        ends = [o.ended for o in self.outcomes if o.error is None and o.ended >= moment]
        return min(ends) - moment if ends else None

    def latencies(self) -> list[float]:
        return sorted(o.elapsed for o in self.outcomes if o.error is None)

    def check(
        self,
        *,
        expected: int,
        allowed: tuple[type[BaseException], ...] = (),
        says: tuple[str, ...] = (),
        slack: float = 1.0,
    ) -> None:
        """Assert invariant 1 for all ``expected`` requests.

        Args:
            expected: How many requests were sent (none may be missing).
            allowed: The error types a request may end with; anything else fails.
            says: Each error's text (its cause chain included) must contain one of these,
                when given: the error says what happened.
            slack: How far past its timeout an error may come (scheduling on a busy machine).
        """
        assert len(self.outcomes) == expected, f"{len(self.outcomes)} of {expected} requests ended"
        for o in self.outcomes:
            if o.error is None:
                continue
            assert isinstance(o.error, allowed), f"unexpected error: {o.error!r}"
            assert isinstance(o.error, PoolError), f"not a pool error: {o.error!r}"
            assert str(o.error), f"an error that says nothing: {o.error!r}"
            assert o.elapsed <= o.timeout + slack, (
                f"{type(o.error).__name__} after {o.elapsed:.2f}s, timeout {o.timeout}s"
            )
            if says:
                text = chain_text(o.error)
                assert any(s in text for s in says), f"the error does not say why: {text}"


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything in its ``__cause__`` / ``__context__`` chain."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]


def chain_text(exc: BaseException) -> str:
    """``str`` and ``repr`` of every error in the chain, one line each."""
    return "\n".join(f"{e}\n{e!r}" for e in chain(exc))


# --------------------------------------------------------------------------------------------
# requests


async def one_request(
    combo: Combo, pool: Any, ledger: Ledger, *, timeout: float, hold: float = 0.0
) -> None:
    """One request (``SELECT 1`` in a ``pool.connection()`` block), recorded in ``ledger``."""
    if combo.is_async:
        await _async_request(combo, pool, ledger, timeout, hold)
    else:
        await asyncio.to_thread(_sync_request, combo.driver, pool, ledger, timeout, hold)


async def crowd(
    combo: Combo, pool: Any, ledger: Ledger, n: int, *, timeout: float, hold: float = 0.0
) -> float:
    """``n`` requests arriving at once; returns the seconds until the last one ended."""
    t0 = time.monotonic()
    if combo.is_async:
        await asyncio.gather(
            *(_async_request(combo, pool, ledger, timeout, hold) for _ in range(n))
        )
    else:
        await asyncio.to_thread(_thread_crowd, combo.driver, pool, ledger, n, timeout, hold)
    return time.monotonic() - t0


async def _async_request(
    combo: Combo, pool: Any, ledger: Ledger, timeout: float, hold: float
) -> None:
    t0 = time.monotonic()
    try:
        async with pool.connection(timeout=timeout) as conn:
            assert await combo.query_value(conn, "SELECT 1") == 1
            if hold:
                await asyncio.sleep(hold)
    except Exception as exc:
        ledger.add(t0, timeout, exc)
    else:
        ledger.add(t0, timeout, None)


def _sync_request(driver: str, pool: Any, ledger: Ledger, timeout: float, hold: float) -> None:
    t0 = time.monotonic()
    try:
        with pool.connection(timeout=timeout) as conn:
            if driver == "psycopg":
                row = conn.execute("SELECT 1").fetchone()
            else:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    row = cur.fetchone()
            assert row is not None and row[0] == 1
            if hold:
                time.sleep(hold)
    except Exception as exc:
        ledger.add(t0, timeout, exc)
    else:
        ledger.add(t0, timeout, None)


def _thread_crowd(
    driver: str, pool: Any, ledger: Ledger, n: int, timeout: float, hold: float
) -> None:
    gate = threading.Barrier(n + 1)

    def run() -> None:
        gate.wait()
        _sync_request(driver, pool, ledger, timeout, hold)

    threads = [threading.Thread(target=run, name=f"crowd-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    gate.wait()
    deadline = time.monotonic() + timeout + 30
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    assert not stuck, f"{stuck} requests still running long after their timeout"


# --------------------------------------------------------------------------------------------
# watching the pool


@dataclass
class Peaks:
    """The largest ``connecting`` and ``size`` seen while watching, and how many looks."""

    connecting: int = 0
    size: int = 0
    looks: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def watch_peaks(pool: Any, peaks: Peaks) -> None:
    """Sample ``pool.stats()`` until ``peaks.stop`` is set: every loop turn for the asyncio
    pool, every half millisecond for the thread pool (whose stats() takes its lock)."""
    pause = 0.0 if type(pool).__name__ == "AsyncPool" else 0.0005
    while not peaks.stop.is_set():
        s = pool.stats()
        peaks.connecting = max(peaks.connecting, s.connecting)
        peaks.size = max(peaks.size, s.size)
        peaks.looks += 1
        await asyncio.sleep(pause)


# --------------------------------------------------------------------------------------------
# the settled state


async def assert_settled(
    combo: Combo, pool: Any, admin: Admin, *, size: int, timeout: float = 10.0
) -> None:
    """Invariants 2 and 3: the pool is back at ``size`` (its ``min_size``, usually), idle,
    every connection it opened is either open or counted closed, and the server sees exactly
    those sessions, none idle in a transaction."""

    def pool_settled() -> bool:
        s = pool.stats()
        return (s.size, s.idle, s.in_use, s.waiting, s.connecting) == (size, size, 0, 0, 0) and (
            s.connections_opened - s.connections_closed == size
        )

    await eventually(pool_settled, timeout=timeout, what=f"pool settles at {size}")
    app = combo.app_of(pool)

    async def server_agrees() -> bool:
        rows = await admin.conn.fetch(
            "SELECT state FROM pg_stat_activity WHERE application_name = $1", app
        )
        return len(rows) == size and all(r["state"] == "idle" for r in rows)

    await eventually(server_agrees, timeout=timeout, what=f"{size} idle sessions of {app}")
    s = pool.stats()
    assert s.size == s.idle + s.in_use + s.connecting
    # and it still serves
    ledger = Ledger()
    await one_request(combo, pool, ledger, timeout=5)
    ledger.check(expected=1)
    assert ledger.ok == 1


def measure(scenario: str, **values: Any) -> None:
    """Print one measurement line (``pytest -rP`` shows it)."""
    text = " ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    print(f"FAULTS {scenario} {text}", flush=True)
