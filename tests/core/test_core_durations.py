"""The rule every duration follows (defect 8 of the Reliability issue), at the config level.

``PoolConfig`` keeps what it checked: floats, ``None`` for "no limit" wherever ``None`` is
allowed, so that neither the core nor a shell meets an ``inf`` where ``None`` means the
same, a NaN, or an int too large for a float.  The shells' own durations and the per-call
timeouts go through the same two functions, :func:`seconds` and :func:`period`.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from pgmarina._core import PoolConfig
from pgmarina._core.config import LONGEST_WAIT, period, seconds

NULLABLE_LIMITS = ["timeout", "max_lifetime", "max_idle", "check_window", "keepalive",
                   "fail_fast_after"]
PERIODS = ["housekeeping_interval", "backoff_initial", "backoff_max"]


def test_longest_wait_is_30_days_and_below_every_platforms_thread_wait_limit() -> None:
    import threading

    assert LONGEST_WAIT == 30 * 24 * 3600
    assert min(threading.TIMEOUT_MAX, 4294967.0) > LONGEST_WAIT + 1  # Windows: ~49.7 days


@pytest.mark.parametrize("name", NULLABLE_LIMITS)
@pytest.mark.parametrize("value", [math.inf, 10**400], ids=["inf", "10**400"])
def test_an_infinite_optional_limit_is_kept_as_none(name: str, value: Any) -> None:
    """``inf`` (or an int no float can hold) is "no limit", like ``None``, and kept as
    ``None`` so that nothing does sums with it."""
    assert getattr(PoolConfig(**{name: value}), name) is None


@pytest.mark.parametrize("name", sorted(set(NULLABLE_LIMITS) - {"timeout"}))
def test_a_huge_finite_lifetime_or_window_stays_a_number(name: str) -> None:
    """Lifetimes and windows are compared, never waited on: no 30-day bound applies."""
    assert getattr(PoolConfig(**{name: 1e308}), name) == 1e308


def test_a_timeout_of_30_days_or_more_is_no_timeout_and_one_just_below_is_kept() -> None:
    """The thread pool's waits overflowed (``OverflowError``) on timeouts such as 1e10."""
    assert PoolConfig(timeout=LONGEST_WAIT).timeout is None
    assert PoolConfig(timeout=1e10).timeout is None
    assert PoolConfig(timeout=LONGEST_WAIT - 1).timeout == LONGEST_WAIT - 1


@pytest.mark.parametrize("name", ["reconnect_timeout", "barge_window"])
def test_a_limit_that_cannot_be_none_keeps_inf_and_turns_a_huge_int_into_inf(name: str) -> None:
    assert getattr(PoolConfig(**{name: math.inf}), name) == math.inf
    value = getattr(PoolConfig(**{name: 10**400}), name)
    assert value == math.inf and type(value) is float


@pytest.mark.parametrize("name", PERIODS)
@pytest.mark.parametrize(
    "value", [math.inf, LONGEST_WAIT * 1.5, 10**400], ids=["inf", "45 days", "10**400"]
)
def test_a_period_longer_than_30_days_is_refused_naming_it(name: str, value: Any) -> None:
    """``housekeeping_interval=inf`` killed the thread pool's housekeeping thread."""
    kwargs = {name: value}
    if name == "backoff_initial":
        kwargs["backoff_max"] = LONGEST_WAIT
    with pytest.raises(ValueError, match=rf"^{name} must be at most 2592000 seconds"):
        PoolConfig(**kwargs)


@pytest.mark.parametrize("name", PERIODS)
def test_a_period_of_exactly_30_days_is_accepted(name: str) -> None:
    config = PoolConfig(**{name: LONGEST_WAIT, "backoff_max": LONGEST_WAIT})
    assert getattr(config, name) == LONGEST_WAIT


def test_every_duration_setting_is_stored_as_a_float_or_none() -> None:
    config = PoolConfig(timeout=3, max_lifetime=4, max_idle=5, check_window=0, keepalive=6,
                        reconnect_timeout=7, fail_fast_after=0, backoff_initial=1,
                        backoff_max=2, housekeeping_interval=1, barge_window=0)
    for name in [*NULLABLE_LIMITS, *PERIODS, "reconnect_timeout", "barge_window"]:
        assert type(getattr(config, name)) is float, name


@pytest.mark.parametrize(
    ("value", "rule", "expected"),
    [
        (None, {"nullable": True}, None),
        (math.inf, {"nullable": True}, None),
        (math.inf, {}, math.inf),
        (LONGEST_WAIT, {"waited": True}, math.inf),
        (LONGEST_WAIT, {}, LONGEST_WAIT),
        (5e-324, {"positive": True}, 5e-324),
        (0, {}, 0.0),
        (-0.0, {}, 0.0),
        (10**400, {}, math.inf),
    ],
)
def test_seconds_normalises_what_it_accepts(value: Any, rule: dict[str, bool],
                                            expected: float | None) -> None:
    assert seconds("x", value, **rule) == expected


@pytest.mark.parametrize(
    ("value", "rule", "error", "message"),
    [
        (None, {}, TypeError, "x must be a number of seconds, not None"),
        (True, {"nullable": True}, TypeError, "x must be a number of seconds, not bool"),
        ("1", {}, TypeError, "x must be a number of seconds, not str"),
        (math.nan, {"nullable": True}, ValueError, "x must be a number of seconds, not NaN"),
        (-math.inf, {}, ValueError, "x must be >= 0 seconds, got -inf"),
        (-(10**400), {}, ValueError, "x must be >= 0 seconds, got -1"),
        (0, {"positive": True}, ValueError, "x must be > 0 seconds, got 0"),
    ],
)
def test_seconds_refuses_with_the_name_first(value: Any, rule: dict[str, bool],
                                             error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        seconds("x", value, **rule)
    assert str(info.value).startswith(message)


def test_period_refuses_zero_and_accepts_up_to_30_days() -> None:
    with pytest.raises(ValueError, match=r"^p must be > 0 seconds"):
        period("p", 0)
    assert period("p", LONGEST_WAIT) == LONGEST_WAIT
