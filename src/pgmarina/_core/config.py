"""Pool settings: one frozen object, validated once, read by the core.

Validation lives here so that both shells (and, later, the compat façades)
reject bad input with the same words: a ``TypeError`` when an argument has the
wrong type, a ``ValueError`` when its value is out of range, and in both cases
the message starts with the argument's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["PoolConfig"]


def _number(name: str, value: Any, *, allow_none: bool, minimum: float, strict: bool) -> Any:
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number, not None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, not NaN")
    if value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} {minimum:g}, got {value!r}")
    return value


def _integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Every knob that steers a pool's decisions.  All durations are in seconds.

    Attributes:
        min_size: Connections kept open even when nobody uses them.
        max_size: The most connections the pool will hold at once.
        timeout: Default time an acquire may wait; ``None`` waits forever.
        max_waiting: Callers allowed in the queue at once (``0``: no limit);
            one more is refused at once with ``TooManyWaiters``.
        max_lifetime: Age after which a connection is replaced (``None``: never).
            Each connection gets up to ``lifetime_jitter`` of it shaved off at
            random, so connections opened together do not all expire together.
        lifetime_jitter: Fraction of ``max_lifetime`` used as jitter (0 to 0.5).
        max_idle: Idle time after which a connection above ``min_size`` is
            closed (``None``: never shrink).
        max_uses: Leases after which a connection is replaced (``0``: no limit).
        check_window: A connection idle for longer than this is health-checked
            before it is handed out; one used more recently is trusted without
            a round trip (``None``: never check on checkout).
        keepalive: Housekeeping pings connections idle for longer than this
            (``None``: no pings).
        max_connecting: Connections opened in parallel at most.
        reconnect_timeout: After failing to connect for this long, the pool calls
            ``reconnect_failed`` (once per outage) and keeps retrying.
        fail_fast_after: After failing to connect for this long, an acquire that
            would have to wait fails at once with ``PoolConnectError``
            (``None``: always wait up to the timeout).
        backoff_initial: First delay before retrying a failed connect.
        backoff_max: Cap of the exponentially growing retry delay.
        housekeeping_interval: Period of the housekeeping tick.
        barge_window: ``0`` (the default) is strict FIFO: a connection that
            comes back goes straight to the caller that has waited longest.
            A positive value lets callers barge: the connection goes back to
            the idle stack and the oldest waiter is woken to take it, but a
            caller that asks first (often the one that just gave it back)
            may take it instead, and the woken waiter keeps its place.  Once
            the oldest waiter has waited ``barge_window`` seconds, hand-off is
            strict again until the queue is served.  With many more threads
            than connections this saves a thread wake-up per cycle, which is
            worth about a third more throughput; the price is wait times
            less even, bounded by ``barge_window``.
    """

    min_size: int = 1
    max_size: int = 10
    timeout: float | None = 30.0
    max_waiting: int = 0
    max_lifetime: float | None = 3600.0
    lifetime_jitter: float = 0.1
    max_idle: float | None = 600.0
    max_uses: int = 0
    check_window: float | None = 2.0
    keepalive: float | None = 60.0
    max_connecting: int = 2
    reconnect_timeout: float = 300.0
    fail_fast_after: float | None = 5.0
    backoff_initial: float = 0.01
    backoff_max: float = 1.0
    housekeeping_interval: float = 1.0
    barge_window: float = 0.0

    def __post_init__(self) -> None:
        _integer("min_size", self.min_size, minimum=0)
        _integer("max_size", self.max_size, minimum=1)
        if self.max_size < self.min_size:
            raise ValueError(
                f"max_size must be >= min_size, got max_size={self.max_size} "
                f"and min_size={self.min_size}"
            )
        _number("timeout", self.timeout, allow_none=True, minimum=0, strict=False)
        _integer("max_waiting", self.max_waiting, minimum=0)
        _number("max_lifetime", self.max_lifetime, allow_none=True, minimum=0, strict=True)
        _number("lifetime_jitter", self.lifetime_jitter, allow_none=False, minimum=0, strict=False)
        if self.lifetime_jitter > 0.5:
            raise ValueError(f"lifetime_jitter must be <= 0.5, got {self.lifetime_jitter!r}")
        _number("max_idle", self.max_idle, allow_none=True, minimum=0, strict=True)
        _integer("max_uses", self.max_uses, minimum=0)
        _number("check_window", self.check_window, allow_none=True, minimum=0, strict=False)
        _number("keepalive", self.keepalive, allow_none=True, minimum=0, strict=True)
        _integer("max_connecting", self.max_connecting, minimum=1)
        _number("reconnect_timeout", self.reconnect_timeout, allow_none=False, minimum=0,
                strict=False)
        _number("fail_fast_after", self.fail_fast_after, allow_none=True, minimum=0,
                strict=False)
        _number("backoff_initial", self.backoff_initial, allow_none=False, minimum=0,
                strict=True)
        _number("backoff_max", self.backoff_max, allow_none=False, minimum=0, strict=True)
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")
        _number("housekeeping_interval", self.housekeeping_interval, allow_none=False,
                minimum=0, strict=True)
        _number("barge_window", self.barge_window, allow_none=False, minimum=0, strict=False)

    @classmethod
    def names(cls) -> frozenset[str]:
        """The keyword names a pool accepts for its settings."""
        return frozenset(f.name for f in fields(cls))
