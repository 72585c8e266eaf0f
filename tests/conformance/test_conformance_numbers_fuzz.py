"""Fuzzing every duration a pool takes, on every driver x shell pair against a real server.

Defect 8 of the Reliability issue: numbers passed validation and then broke things (NaN
timers, ``OverflowError`` from huge waits, dead threads, "0" meaning opposite things in the
two shells).  The rule that replaced it is written down in :class:`pgmarina._core.PoolConfig`
and restated here as an independent oracle, :func:`verdict`.  Hypothesis throws floats
(NaN, infinities, zeros, subnormals, huge ones), ints (huge ones too), bools and things that
are not numbers at

* every duration argument of the constructors (checked without a connection: every pair
  must accept or refuse exactly as the oracle says, in the same words);
* the per-call timeouts of ``acquire``, ``connection``, ``open`` and ``wait``, on one fixed
  pool per pair, idle or busy;
* ``close(timeout=)``, with a lease out that comes back a moment later;
* and, for a few values the constructors accept, a real pool that must then open, serve,
  reset a dirty connection and close promptly.

A refused value must raise ``TypeError``/``ValueError`` whose message starts with the
argument's name and leave the pool as it was; an accepted one must then work.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from conformance_harness import COMBOS, Combo
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pgmarina import PoolConnectError, PoolTimeout

#: The documented bound on waits (``pgmarina._core.config.LONGEST_WAIT``): 30 days.
LONGEST_WAIT = 30 * 24 * 3600.0

# ---------------------------------------------------------------------------------------------
# The rule, restated: what each duration accepts


@dataclass(frozen=True)
class Rule:
    nullable: bool = False  # None accepted: no limit
    positive: bool = False  # 0 refused
    period: bool = False  # a period or delay: more than 0, at most LONGEST_WAIT


SETTINGS: dict[str, Rule] = {
    "timeout": Rule(nullable=True),
    "max_lifetime": Rule(nullable=True, positive=True),
    "max_idle": Rule(nullable=True),
    "check_window": Rule(nullable=True),
    "keepalive": Rule(nullable=True, positive=True),
    "reconnect_timeout": Rule(),
    "fail_fast_after": Rule(nullable=True),
    "backoff_initial": Rule(period=True),
    "backoff_max": Rule(period=True),
    "housekeeping_interval": Rule(period=True),
    "barge_window": Rule(),
    "connect_timeout": Rule(positive=True),
    "reset_timeout": Rule(positive=True),
}
PER_CALL = Rule(nullable=True)

# What makes the fuzzed argument the only thing that can be wrong.
SIDE_SETTINGS: dict[str, dict[str, Any]] = {
    "backoff_initial": {"backoff_max": LONGEST_WAIT},
    "backoff_max": {"backoff_initial": 5e-324},
    "connect_timeout": {"fail_fast_after": 0.5},  # a tiny one cannot connect: fail soon
}


def verdict(rule: Rule, value: Any) -> type[Exception] | None:
    """The error the rule demands for ``value``, or ``None`` if it must be accepted."""
    if value is None:
        return None if rule.nullable else TypeError
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return TypeError
    if value != value or value < 0 or ((rule.positive or rule.period) and value == 0):
        return ValueError
    if rule.period and value > LONGEST_WAIT:
        return ValueError
    return None


EDGES: list[Any] = [
    math.nan, math.inf, -math.inf, 0, 0.0, -0.0, 5e-324, 1e-9, 0.001, 1, 2.5,
    LONGEST_WAIT - 1, LONGEST_WAIT, LONGEST_WAIT + 1, 1e10, 1e308, sys.float_info.max,
    10**400, -(10**400), -1, -1e-9, True, False, None, "1", "inf", b"1", [1.0], 1j,
    Decimal("1"), Fraction(1, 2),
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(EDGES), st.floats(), st.integers(), st.floats(min_value=0, max_value=5)
)

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ---------------------------------------------------------------------------------------------
# Driving a pair from plain (hypothesis) code: its pools live on a loop in a thread of its own


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def on_loop() -> Iterator[LoopThread]:
    runner = LoopThread()
    try:
        yield runner
    finally:
        runner.stop()


async def _cleanup(combo: Combo) -> None:
    await combo._cleanup()
    combo._pools.clear()


def _starts_with_name(exc: BaseException, name: str) -> None:
    assert str(exc).startswith(f"{name} "), f"{type(exc).__name__}: {exc}"


def _combo_ids() -> list[str]:
    return [c.id for c in COMBOS]


# ---------------------------------------------------------------------------------------------
# Constructor arguments: accepted or refused as the rule says, by every pair in the same words


@given(name=st.sampled_from(sorted(SETTINGS)), value=VALUES)
@settings(FUZZ, max_examples=300)
def test_every_duration_argument_is_accepted_or_refused_by_the_rule_in_every_pair(
    pg: Any, name: str, value: Any
) -> None:
    expected = verdict(SETTINGS[name], value)
    outcomes = {}
    for combo in COMBOS:
        try:
            pool = combo.pool_class(
                pg.dsn, driver=combo.driver, **{name: value, **SIDE_SETTINGS.get(name, {})}
            )
        except (TypeError, ValueError) as exc:
            _starts_with_name(exc, name)
            outcomes[combo.id] = (type(exc), str(exc))
        else:
            outcomes[combo.id] = None
            if name == "timeout":
                no_limit = value is None or value >= LONGEST_WAIT
                assert (pool.timeout is None) == no_limit
                assert pool.timeout is None or type(pool.timeout) is float
    if name == "barge_window":
        # Only the thread Pool barges; AsyncPool refuses any window but 0.
        sync = {outcomes[c.id] for c in COMBOS if not c.is_async}
        assert len(sync) == 1
        (outcome,) = sync
        for c in COMBOS:
            if c.is_async and expected is None and value != 0:
                assert outcomes[c.id] is not None and outcomes[c.id][0] is ValueError
            elif c.is_async:
                assert outcomes[c.id] == outcome
    else:
        assert len(set(outcomes.values())) == 1, outcomes
        (outcome,) = set(outcomes.values())
    assert (outcome and outcome[0]) == expected, (name, value, outcome)


# ---------------------------------------------------------------------------------------------
# Per-call timeouts on a fixed pool: refused at once, or the call works


@pytest.mark.slow
@pytest.mark.parametrize("combo", COMBOS, ids=_combo_ids())
def test_every_per_call_timeout_is_accepted_or_refused_and_then_works(
    combo: Combo, pg: Any, on_loop: LoopThread
) -> None:
    combo = combo.fresh()
    pool = on_loop.run(combo.make_pool(pg, min_size=1, max_size=1))

    async def example(method: str, value: Any, busy: bool) -> None:
        expected = verdict(PER_CALL, value)
        held = await combo.acquire(pool) if busy else None
        released: asyncio.Task[None] | None = None
        if held is not None:

            async def release_later() -> None:
                await asyncio.sleep(0.05)
                await combo.release(pool, held)

            released = asyncio.create_task(release_later())
        t0 = time.monotonic()
        try:
            if method == "acquire":
                conn = await combo.acquire(pool, timeout=value)
                assert await combo.query_value(conn, "SELECT 1") == 1
                await combo.release(pool, conn)
            elif method == "connection":
                async with combo.connection(pool, timeout=value) as conn:
                    assert await combo.query_value(conn, "SELECT 1") == 1
            elif method == "wait":
                await combo.call(pool.wait, timeout=value)
            else:
                await combo.open(pool, wait=True, timeout=value)
        except (TypeError, ValueError) as exc:
            assert type(exc) is expected, (method, value, exc)
            _starts_with_name(exc, "timeout")
        except PoolTimeout:
            # Only a caller that had to wait, with less time than the lease took to return.
            assert expected is None and busy and value is not None and value < 1, value
        else:
            assert expected is None, (method, value)
            if busy and value is not None and method in ("acquire", "connection"):
                assert value >= 0.01, value  # it could not have been served in time
        assert time.monotonic() - t0 < 2
        if released is not None:
            await released
        s = pool.stats()
        assert (s.size, s.in_use, s.waiting, pool.closed) == (1, 0, 0, False), s

    @given(
        method=st.sampled_from(["acquire", "connection", "wait", "open"]),
        value=VALUES,
        busy=st.booleans(),
    )
    @settings(FUZZ, max_examples=60)
    def fuzz(method: str, value: Any, busy: bool) -> None:
        assume(not busy or method in ("acquire", "connection"))
        on_loop.run(example(method, value, busy))

    try:
        fuzz()
    finally:
        on_loop.run(_cleanup(combo))


@pytest.mark.slow
@pytest.mark.parametrize("combo", COMBOS, ids=_combo_ids())
def test_a_close_timeout_is_accepted_or_refused_and_then_the_pool_closes_promptly(
    combo: Combo, pg: Any, on_loop: LoopThread
) -> None:
    combo = combo.fresh()

    async def example(value: Any) -> None:
        expected = verdict(PER_CALL, value)
        pool = await combo.make_pool(pg, min_size=0, max_size=1)
        held = await combo.acquire(pool)

        async def release_later() -> None:
            await asyncio.sleep(0.05)
            await combo.release(pool, held)  # harmless if close terminated it

        released = asyncio.create_task(release_later())
        t0 = time.monotonic()
        try:
            await combo.close(pool, timeout=value)
        except (TypeError, ValueError) as exc:
            assert type(exc) is expected, (value, exc)
            _starts_with_name(exc, "timeout")
            assert not pool.closed
            await released
            assert pool.stats().in_use == 0
            await combo.close(pool, timeout=1)
        else:
            assert expected is None, value
            assert time.monotonic() - t0 < 1.5
            await released
        assert pool.closed
        s = pool.stats()
        assert (s.size, s.in_use) == (0, 0), s

    @given(value=VALUES)
    @settings(FUZZ, max_examples=25)
    def fuzz(value: Any) -> None:
        on_loop.run(example(value))

    try:
        fuzz()
    finally:
        on_loop.run(_cleanup(combo))


# ---------------------------------------------------------------------------------------------
# Constructor values that are accepted: the pool then works


ACCEPTED = st.tuples(st.sampled_from(sorted(SETTINGS)), VALUES).filter(
    lambda nv: verdict(SETTINGS[nv[0]], nv[1]) is None
)


@pytest.mark.slow
@pytest.mark.parametrize("combo", COMBOS, ids=_combo_ids())
def test_a_pool_built_with_any_accepted_duration_opens_serves_resets_and_closes(
    combo: Combo, pg: Any, on_loop: LoopThread
) -> None:
    combo = combo.fresh()

    async def example(name: str, value: Any) -> None:
        settings = {name: value, **SIDE_SETTINGS.get(name, {})}
        pool = await combo.make_pool(pg, opened=False, min_size=1, max_size=2, **settings)
        try:
            await combo.open(pool, wait=True, timeout=5)
        except (PoolTimeout, PoolConnectError):
            # A connect_timeout too short to connect in: the pool says so, and closes.
            assert name == "connect_timeout" and value < 1, (name, value)
        else:
            conn = await combo.acquire(pool, timeout=10)
            await combo.begin(conn)
            await combo.release(pool, conn)  # dirty: reset, or replaced if the reset fails
            conn = await combo.acquire(pool, timeout=10)
            assert not combo.in_transaction(conn)
            assert await combo.query_value(conn, "SELECT 1") == 1
            await combo.release(pool, conn)
        t0 = time.monotonic()
        await combo.close(pool, timeout=1)
        assert time.monotonic() - t0 < 3
        assert pool.closed
        s = pool.stats()
        assert (s.size, s.in_use) == (0, 0), s

    @given(name_value=ACCEPTED)
    @settings(FUZZ, max_examples=15)
    def fuzz(name_value: tuple[str, Any]) -> None:
        name, value = name_value
        assume(not (combo.is_async and name == "barge_window" and value != 0))
        on_loop.run(example(name, value))

    try:
        fuzz()
    finally:
        on_loop.run(_cleanup(combo))
