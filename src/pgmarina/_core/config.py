"""Pool settings: one frozen object, validated once, read by the core.

Validation lives here so that both shells (and, later, the compat façades)
reject bad input with the same words: a ``TypeError`` when an argument has the
wrong type, a ``ValueError`` when its value is out of range, and in both cases
the message starts with the argument's name.  :func:`seconds` and
:func:`period` check every duration the pools take, settings and per-call
timeouts alike, by the rule written down in :class:`PoolConfig`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["LONGEST_WAIT", "PoolConfig", "period", "seconds"]

_INF = math.inf
_FLOAT_MAX = sys.float_info.max

#: Thirty days, in seconds: the longest wait a pool ever arms.  A timeout this
#: long or longer is no timeout at all, and a period or a delay may not be
#: longer.  Nobody means a longer wait, and longer ones overflow some
#: platforms' blocking calls (``threading.TIMEOUT_MAX`` is under 50 days on
#: Windows); a bound of our own keeps every shell and platform alike.
LONGEST_WAIT = 30 * 24 * 3600.0


def seconds(
    name: str, value: Any, *, nullable: bool = False, positive: bool = False,
    waited: bool = False,
) -> float | None:
    """Check a limit in seconds and return it as the pool keeps it: a float.

    ``inf`` means "no limit", and so does ``None`` when ``nullable``.  A
    ``waited`` limit (one the pool arms a timer or a blocking wait for) of
    :data:`LONGEST_WAIT` or more is no limit as well.  No limit comes back as
    ``None`` when ``nullable``, else as ``inf``.

    Args:
        name: The argument's name, which every error message starts with.
        value: What the caller passed: an int or a float (not a bool).
        nullable: ``None`` is accepted (and means no limit).
        positive: ``0`` is refused.
        waited: Values from :data:`LONGEST_WAIT` up mean no limit.

    Raises:
        TypeError: ``value`` is not a number (or is ``None`` where not allowed).
        ValueError: ``value`` is NaN, negative, or ``0`` when ``positive``.
    """
    if value is None:
        if nullable:
            return None
        raise TypeError(f"{name} must be a number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if value != value:
        raise ValueError(f"{name} must be a number of seconds, not NaN")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'>' if positive else '>='} 0 seconds, got {value!r}")
    if value > _FLOAT_MAX or (waited and value >= LONGEST_WAIT):
        return None if nullable else _INF  # inf, or an int too big for a float
    return float(value)


def period(name: str, value: Any) -> float:
    """Check a period or a delay in seconds: more than 0, at most :data:`LONGEST_WAIT`.

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: ``value`` is NaN, not positive, infinite or above the bound.
    """
    checked = seconds(name, value, positive=True)
    assert checked is not None
    if checked > LONGEST_WAIT:
        raise ValueError(
            f"{name} must be at most {LONGEST_WAIT:.0f} seconds (30 days), got {value!r}"
        )
    return checked


def _number(name: str, value: Any, *, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, not NaN")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")


def _integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Every knob that steers a pool's decisions.  All durations are in seconds.

    One rule holds for every duration a pool takes, here, in the shells'
    ``connect_timeout`` and ``reset_timeout``, and in every per-call
    ``timeout`` (``acquire``, ``connection``, ``open``, ``wait``, ``close``):

    * A duration is an ``int`` or a ``float``; anything else (``bool`` and
      numeric strings included) raises ``TypeError``.  NaN and negative
      values raise ``ValueError``.  Both messages start with the name.
    * A *limit* (how long something may wait, last or take) is no limit
      when it is ``inf``, or ``None`` where the signature allows ``None``;
      it is then kept as ``None`` (where allowed) or ``inf``.  A limit the
      pool waits on with a timer (``timeout``, ``connect_timeout``,
      ``reset_timeout``, the per-call timeouts) is no limit from
      :data:`LONGEST_WAIT` (30 days) up, too: longer waits overflow some
      platforms' blocking calls, and nobody means one.
    * ``0`` means "not at all" wherever it is accepted: an acquire that
      does not wait, a ``close`` that terminates leases at once, a health
      check on every checkout (``check_window``), failing fast or calling
      ``reconnect_failed`` at the first failure, strict FIFO
      (``barge_window``), no connection above ``min_size`` left idle
      (``max_idle``).  Where "not at all" makes no sense, ``0`` is
      refused: ``max_lifetime``, ``keepalive``,
      ``connect_timeout`` (libpq would read it as "no limit", asyncio as
      "fail at once") and ``reset_timeout`` (which would throw every dirty
      connection away).
    * A *period* or *delay* (``housekeeping_interval``, ``backoff_initial``,
      ``backoff_max``) is how often something happens, not a limit: it must
      be more than ``0`` and at most :data:`LONGEST_WAIT`, so ``inf`` is
      refused.  (Housekeeping refills the pool to ``min_size``; a pool
      cannot do without it.)
    * Settings are stored as checked: ``PoolConfig(timeout=inf).timeout``
      is ``None``.

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
            closed (``None``: never shrink).  ``0``: none above ``min_size``
            is kept idle at all; one that comes back (or connects) while
            nobody waits for it is closed at once.  With ``min_size=0``
            that is a "null pool": it opens connections on demand, hands
            one that comes back to a waiting caller, and keeps none.
        max_uses: Leases after which a connection is replaced (``0``: no limit).
        check_window: A connection idle for longer than this is health-checked
            before it is handed out; one used more recently is trusted without
            a round trip (``None``: never check on checkout).
        idle_order: Which idle connection goes out first: ``"lifo"`` (the
            default), the most recently used, so that the others sit idle and
            can be closed under ``max_idle`` and a busy connection stays within
            ``check_window``; ``"fifo"``, the one idle longest, so that work
            rotates over all of them (SQLAlchemy's default order).  Measured
            on a server on the same 2-core machine: one task on ten
            connections ran 17 % faster in FIFO order, since a server process
            finishes its own work after a reply while the next query goes to
            another; with more tasks than connections the order did not
            matter.  Under light load FIFO leaves every connection idle
            longer, so more checkouts pass ``check_window`` and are checked.
        keepalive: Housekeeping pings connections idle for longer than this
            (``None``: no pings).
        max_connecting: Connections opened in parallel at most.  The thread
            ``Pool`` connects in a few worker threads of its own; beyond
            their number connects queue, so a large value does not start a
            thread per connect.
        reconnect_timeout: After failing to connect for this long, the pool calls
            ``reconnect_failed`` (once per outage) and keeps retrying.
        fail_fast_after: After failing to connect for this long, an acquire that
            would have to wait fails at once with ``PoolConnectError``
            (``None``: always wait up to the timeout).
        fail_fast_waiters: Also fail the acquires already waiting once the
            pool has failed to connect for ``fail_fast_after`` (at the next
            failed connect); by default they wait up to their own timeout.
        prefill: Open ``min_size`` connections ahead of demand, at ``open()``
            and whenever the pool falls below it (the default).  ``False``:
            connections open only for callers that need one, and up to
            ``min_size`` of them are then kept however long they sit idle;
            one that closes (lifetime, broken) is not replaced until a caller
            needs it.  That is SQLAlchemy's ``QueuePool`` and its
            ``pool_size``: its integration sets it.  ``wait()`` and
            ``open(wait=True)`` then have nothing to wait for.
        configure_fails_waiter: A connect whose ``configure`` hook raises
            also fails the caller that has waited longest, with a
            ``PoolConnectError`` caused by the hook's error (asyncpg's pool
            fails the acquire whose ``init`` raised; its façade sets this).
            By default such a connect is retried with backoff while callers
            wait, as for any failed connect (psycopg_pool's way).
        backoff_initial: First delay before retrying a failed connect.
        backoff_max: Cap of the exponentially growing retry delay.
        housekeeping_interval: Period of the housekeeping tick.
        barge_window: ``0`` (the default here and ``AsyncPool``'s only
            value; the thread ``Pool`` defaults to ``0.02``) is strict FIFO:
            a connection that comes back goes straight to the caller that
            has waited longest.  A positive value lets callers barge: a
            returned connection goes back to the idle stack and the oldest
            waiter is woken to take it, but a caller that asks first (often
            the one that just gave it back) may take it instead, and the
            woken waiter keeps its place.  Once the oldest waiter has waited
            ``barge_window`` seconds, hand-off is strict again until the
            queue is served.  With many more threads than connections this
            saves thread switches on every cycle (1.3x to 1.8x the
            throughput measured, 50 threads on 10 connections); the price is
            wait times less even, bounded by ``barge_window``.
        pgbouncer: The pool connects through PgBouncer in transaction
            pooling mode, where each transaction may run in another server
            session: the driver prepares no named statements and a release
            sends no session reset.  ``True`` or ``False``
            only: PgBouncer passes the server's ``server_version`` on and
            answers ``SHOW`` only on its admin console, so it cannot be told
            from a server reliably.
        leak_timeout: A lease held longer than this is reported as a
            probable leak, once per lease, by housekeeping (``None``, the
            default: leak detection is off and costs nothing).
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
    fail_fast_waiters: bool = False
    configure_fails_waiter: bool = False
    prefill: bool = True
    backoff_initial: float = 0.01
    backoff_max: float = 1.0
    housekeeping_interval: float = 1.0
    barge_window: float = 0.0
    idle_order: str = "lifo"
    # PgBouncer (Scale-out issue): read by the shells, which set the driver up for it.
    pgbouncer: bool = False
    # leak detection (issue 15, observability)
    leak_timeout: float | None = None

    def __post_init__(self) -> None:
        _integer("min_size", self.min_size, minimum=0)
        _integer("max_size", self.max_size, minimum=1)
        if self.max_size < self.min_size:
            raise ValueError(
                f"max_size must be >= min_size, got max_size={self.max_size} "
                f"and min_size={self.min_size}"
            )
        self._seconds("timeout", nullable=True, waited=True)
        _integer("max_waiting", self.max_waiting, minimum=0)
        self._seconds("max_lifetime", nullable=True, positive=True)
        _number("lifetime_jitter", self.lifetime_jitter, minimum=0)
        if self.lifetime_jitter > 0.5:
            raise ValueError(f"lifetime_jitter must be <= 0.5, got {self.lifetime_jitter!r}")
        self._seconds("max_idle", nullable=True)
        _integer("max_uses", self.max_uses, minimum=0)
        self._seconds("check_window", nullable=True)
        self._seconds("keepalive", nullable=True, positive=True)
        _integer("max_connecting", self.max_connecting, minimum=1)
        self._seconds("reconnect_timeout")
        self._seconds("fail_fast_after", nullable=True)
        if not isinstance(self.fail_fast_waiters, bool):
            raise TypeError(
                f"fail_fast_waiters must be a bool, not {type(self.fail_fast_waiters).__name__}"
            )
        if not isinstance(self.configure_fails_waiter, bool):
            raise TypeError(
                "configure_fails_waiter must be a bool, not "
                f"{type(self.configure_fails_waiter).__name__}"
            )
        if not isinstance(self.prefill, bool):
            raise TypeError(f"prefill must be a bool, not {type(self.prefill).__name__}")
        self._set("backoff_initial", period("backoff_initial", self.backoff_initial))
        self._set("backoff_max", period("backoff_max", self.backoff_max))
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")
        self._set("housekeeping_interval", period("housekeeping_interval",
                                                  self.housekeeping_interval))
        self._seconds("barge_window")
        if not isinstance(self.idle_order, str):
            raise TypeError(f"idle_order must be a str, not {type(self.idle_order).__name__}")
        if self.idle_order not in ("lifo", "fifo"):
            raise ValueError(f"idle_order must be 'lifo' or 'fifo', not {self.idle_order!r}")
        # PgBouncer (Scale-out issue)
        if not isinstance(self.pgbouncer, bool):
            raise TypeError(
                f"pgbouncer must be True or False, not {self.pgbouncer!r} (PgBouncer cannot be "
                "told from a server reliably, so there is no automatic detection)"
            )
        self._seconds("leak_timeout", nullable=True, positive=True)

    def _seconds(self, name: str, **rule: bool) -> None:
        self._set(name, seconds(name, getattr(self, name), **rule))

    def _set(self, name: str, value: float | None) -> None:
        # Kept as checked: floats, with None for "no limit" wherever None is
        # allowed, so neither the core nor a shell meets a huge int, or an
        # inf where a None means the same.
        object.__setattr__(self, name, value)

    @classmethod
    def names(cls) -> frozenset[str]:
        """The keyword names a pool accepts for its settings."""
        return frozenset(f.name for f in fields(cls))
