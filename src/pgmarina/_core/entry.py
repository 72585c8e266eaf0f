"""Entries: a pooled connection plus everything the pool knows about it.

The driver's connection object is never written to; the pool's metadata lives
here.  An entry is always in exactly one :class:`EntryState`, and only
:class:`~pgmarina._core.pool.PoolCore` moves it from one state to another
(see ``ALLOWED`` for every legal move).  A move that is not listed raises
:class:`~pgmarina.errors.IllegalTransition` instead of quietly corrupting the
pool's books.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = [
    "ALLOWED",
    "CHECKING",
    "CLOSED",
    "CLOSING",
    "CONNECTING",
    "IDLE",
    "IN_USE",
    "PINGING",
    "RESETTING",
    "Entry",
    "EntryState",
]


class EntryState(enum.Enum):
    """Where an entry is in its life."""

    CONNECTING = "connecting"  #: a connect (and ``configure``) is under way
    IDLE = "idle"  #: in the idle stack, ready to hand out
    CHECKING = "checking"  #: a borrower is health-checking it before use
    IN_USE = "in use"  #: leased to a borrower
    RESETTING = "resetting"  #: released; its session is being cleaned
    PINGING = "pinging"  #: housekeeping is pinging it while it sits idle
    CLOSING = "closing"  #: retired; the shell is closing it
    CLOSED = "closed"  #: gone for good


S = EntryState
# Short names, for code that compares states on hot paths.
CONNECTING = S.CONNECTING
IDLE = S.IDLE
CHECKING = S.CHECKING
IN_USE = S.IN_USE
RESETTING = S.RESETTING
PINGING = S.PINGING
CLOSING = S.CLOSING
CLOSED = S.CLOSED

#: Every move the core may make.  Anything else is a bug.
ALLOWED: dict[EntryState, frozenset[EntryState]] = {
    S.CONNECTING: frozenset({S.IDLE, S.IN_USE, S.CLOSING, S.CLOSED}),
    S.IDLE: frozenset({S.IN_USE, S.CHECKING, S.PINGING, S.CLOSING}),
    S.CHECKING: frozenset({S.IDLE, S.IN_USE, S.CLOSING}),
    S.IN_USE: frozenset({S.IDLE, S.IN_USE, S.RESETTING, S.CLOSING}),
    S.RESETTING: frozenset({S.IDLE, S.IN_USE, S.CLOSING}),
    S.PINGING: frozenset({S.IDLE, S.IN_USE, S.CLOSING}),
    S.CLOSING: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
}


class Entry:
    """One pooled connection and its bookkeeping.

    Attributes:
        id: Small integer, unique within the pool, for logs and ``repr``.
        conn: The driver connection (``None`` until the connect succeeds).
        state: Current :class:`EntryState`; written only by the core.
        created_at: When the connect succeeded (monotonic seconds).
        expires_at: When ``max_lifetime`` (with jitter) retires it.
        idle_since: When it last became idle.
        alive_at: When it was last known to work (connect, return, ping, check).
        acquired_at: When the current lease began.
        uses: Leases so far.
        generation: The pool generation it was born in; ``expire()`` bumps the
            pool's, and older entries are replaced as they come back.
        host: Which server it talks to (``None`` while the pool has one host).
        lease: Opaque slot for the shell (the guard it handed out).
        info: A dict of the borrowers' own per-connection data (``None``
            until first asked for, see :func:`pgmarina._lease.info`): what
            an integration keeps about one physical connection, since
            asyncpg's connections take no attributes.  Dropped with the entry.
    """

    __slots__ = (
        "acquired_at",
        "alive_at",
        "conn",
        "created_at",
        "expires_at",
        "generation",
        "host",
        "id",
        "idle_since",
        "info",
        "lease",
        "reset_by",
        "state",
        "uses",
    )

    def __init__(self, id: int, generation: int, host: Any = None) -> None:
        self.id = id
        self.conn: Any = None
        self.state = EntryState.CONNECTING
        self.created_at = 0.0
        self.expires_at = float("inf")
        self.idle_since = 0.0
        self.alive_at = 0.0
        self.acquired_at = 0.0
        self.uses = 0
        #: The deadline of a reset in flight, while the asyncio shell's reset
        #: watch bounds it (see ``AsyncPool._unwatch_reset``); else ``None``.
        self.reset_by: float | None = None
        self.generation = generation
        self.host = host
        self.lease: Any = None
        self.info: dict[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"<Entry #{self.id} {self.state.value} uses={self.uses} gen={self.generation}>"
