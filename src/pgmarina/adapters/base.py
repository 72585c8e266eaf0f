"""What a driver adapter does for the pool, and the local status codes.

An adapter is the one place where a driver's quirks live.  The shells call it
for IO (connect, close, rollback, ping) and for *local* inspection that costs
no round trip: ``is_closed`` and ``status``, which reads the transaction
state the driver already tracks from the server's ReadyForQuery messages.
Adapters hold no per-pool state; the pool passes the DSN and keywords.  (A
pool behind PgBouncer uses a copy flagged ``pgbouncer``: see
:meth:`_AdapterBase.behind_pgbouncer`.)
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

from .._lease import Lease
from .._redact import one_line, scrub

__all__ = [
    "BROKEN",
    "BUSY",
    "CLEAN",
    "IN_TRANSACTION",
    "AsyncAdapter",
    "SyncAdapter",
    "bounded",
    "conninfo_complaint",
    "rejected_for_good",
    "shutdown_socket",
    "with_connect_timeout",
]

T = TypeVar("T")
_INF = float("inf")

if sys.version_info >= (3, 11):

    async def bounded(aw: Awaitable[T], seconds: float | None) -> T:
        """Await ``aw``, cancelling it after ``seconds`` (``TimeoutError``)."""
        async with asyncio.timeout(seconds):
            return await aw

else:  # pragma: no cover - Python 3.10

    async def bounded(aw: Awaitable[T], seconds: float | None) -> T:
        """Await ``aw``, cancelling it after ``seconds`` (``TimeoutError``)."""
        return await asyncio.wait_for(aw, seconds)

#: ``status()`` codes, from "hand it on as is" to "throw it away".
CLEAN = 0  #: idle, no transaction: nothing to undo
IN_TRANSACTION = 1  #: in a transaction (open or failed): needs ROLLBACK
BUSY = 2  #: a query or its cancellation is still in flight
BROKEN = 3  #: closed or lost: discard


class _AdapterBase:
    #: Name used in ``driver=`` and in ``repr``.
    name: ClassVar[str] = "?"
    #: The lease class handed to borrowers.
    lease_class: ClassVar[type[Lease]] = Lease
    #: ``pool.connection()`` commits on success and rolls back on error
    #: (psycopg's convention), instead of leaving that to the reset.
    transactional_context: ClassVar[bool] = False
    #: ``True`` on the copy :meth:`behind_pgbouncer` makes: its ``full_reset``
    #: ends the transaction and sends no session reset.
    pgbouncer: bool = False

    def behind_pgbouncer(self) -> Any:
        """A copy of this adapter for a pool that talks to PgBouncer in
        transaction pooling mode (the pool's ``pgbouncer=True``).

        There a client owns a server session for one transaction only, and
        the next transaction may run in another one, shared with other
        clients.  So a session reset (``DISCARD ALL``, ``RESET ALL``…) would
        reset whichever session the bouncer picked, for nobody's benefit;
        the copy's ``full_reset`` only rolls back an open transaction and
        clears what the driver keeps on the client side.  A copy (shallow),
        so that an adapter object given as ``driver=`` to several pools is
        left as it was for the others.
        """
        twin = copy.copy(self)
        twin.pgbouncer = True
        return twin

    def pgbouncer_kwargs(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """``kwargs`` with the driver's settings for transaction pooling.

        The default adds nothing: a driver that never prepares named
        statements (psycopg2 interpolates parameters on the client) is safe
        as it is.

        Raises:
            ValueError: a keyword the caller gave turns on what PgBouncer
                cannot carry across transactions; the message names it.
        """
        return dict(kwargs)

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        """Raise ``TypeError``/``ValueError`` for connect arguments the driver rejects."""

    def is_closed(self, conn: Any) -> bool:
        """``True`` when the driver already knows the connection is gone."""
        raise NotImplementedError

    def status(self, conn: Any) -> int:
        """One of the status codes, read locally (no round trip)."""
        raise NotImplementedError

    def quick_status(self, conn: Any) -> int:
        """``0`` (:data:`CLEAN`) when the connection is clean, anything else
        when :meth:`status` must be asked.  Read on every release, so drivers
        whose own status code is ``0`` for "idle, no transaction" (libpq's)
        bind it to a C-level getter here; the default asks :meth:`status`."""
        return self.status(conn)

    def terminate(self, conn: Any) -> None:
        """Close at once, without talking to the server."""
        raise NotImplementedError

    def is_permanent(self, exc: BaseException) -> bool:
        """Whether a connect error will not pass by waiting.

        ``True`` for the server's rejections that only a change of
        configuration mends: failed authentication and unknown role (SQLSTATE
        class 28) and unknown database (``3D000``).  The pool then fails its
        callers at once instead of riding the error out as an outage.
        Everything else (refused, reset, timed out, ``57P03`` starting up,
        ``53300`` too many connections) is transient.  The default knows no
        driver and says ``False``.
        """
        return False


class AsyncAdapter(_AdapterBase):
    """Adapter for :class:`~pgmarina.AsyncPool`; IO methods are coroutines.

    Methods taking ``timeout`` must give up after that many seconds; drivers
    with native timeouts use them (cheaper than wrapping in ``bounded``).
    ``rollback``, ``full_reset`` and ``undo`` may also be given ``None``
    (no bound of their own) when the adapter sets ``terminate_interrupts``.
    """

    #: ``terminate()`` makes an operation in flight on the connection fail at
    #: once, as a cancellation would.  The pool then bounds its resets with
    #: one watchdog, which terminates a reset that overruns ``reset_timeout``,
    #: instead of arming a timer in every reset: with asyncpg, that timer cost
    #: a tenth of a full-reset release (measured).  Only for drivers whose
    #: socket the event loop owns: closing one whose socket a coroutine
    #: waits on by hand (psycopg) would leave that coroutine waiting.
    terminate_interrupts: ClassVar[bool] = False

    async def connect(self, dsn: str | None, kwargs: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    async def close(self, conn: Any, timeout: float) -> None:
        raise NotImplementedError

    async def settle(self, conn: Any, timeout: float) -> bool:
        """Wait for an in-flight query to end; ``False`` if it would not."""
        return False

    async def rollback(self, conn: Any, timeout: float) -> None:
        raise NotImplementedError

    async def full_reset(self, conn: Any, timeout: float) -> None:
        """Reset the whole session (transaction, settings, locks, listens…)."""
        raise NotImplementedError

    async def ping(self, conn: Any, timeout: float) -> None:
        raise NotImplementedError

    async def in_recovery(self, conn: Any) -> bool:
        """Whether the server is a standby (in recovery), for multi-host pools.

        Cheap where it can be: the ``in_hot_standby`` setting the server
        reports at connect (and again when it changes) on PostgreSQL 14 and
        later; else ``SELECT pg_is_in_recovery()``, leaving no transaction open.
        """
        raise NotImplementedError

    async def end_block(self, conn: Any, failed: bool) -> None:
        """Commit (``failed`` false) or roll back, for ``transactional_context``."""

    async def undo(self, conn: Any, undo: list[Any]) -> None:
        """Revert what the driver's lease class noted during a lease."""

    # LISTEN/NOTIFY, for the listener's own connection (pgmarina.listener).
    # ``deliver(channel, payload, pid)`` takes each notification.

    async def listen(
        self, conn: Any, channel: str, deliver: Callable[[str, str, int], None], timeout: float
    ) -> None:
        """``LISTEN channel`` (quoted), with notifications going to ``deliver``."""
        raise NotImplementedError

    async def unlisten(
        self, conn: Any, channel: str, deliver: Callable[[str, str, int], None], timeout: float
    ) -> None:
        """``UNLISTEN channel``: undo :meth:`listen`."""
        raise NotImplementedError

    def on_lost(self, conn: Any, callback: Callable[[], None]) -> None:
        """Have ``callback()`` called when the driver sees ``conn`` close.

        For drivers that read the socket on their own (asyncpg); the others
        notice a loss in :meth:`wait_notifications`, and need nothing here.
        """

    async def wait_notifications(
        self, conn: Any, deliver: Callable[[str, str, int], None], seconds: float
    ) -> None:
        """Hand notifications to ``deliver`` for up to ``seconds``; raise if
        the connection is lost.  Cancelled whenever the listener has other
        work, so it must leave the connection usable when cancelled."""
        raise NotImplementedError


class SyncAdapter(_AdapterBase):
    """Adapter for the thread :class:`~pgmarina.Pool`.

    Blocking calls cannot be cancelled, so the pool bounds them another way:
    connects by libpq's ``connect_timeout``, and its own checks and resets by
    a watchdog that calls ``interrupt`` when they overrun, which makes the
    blocked call fail at once.
    """

    def interrupt(self, conn: Any) -> None:
        """From another thread: make IO blocked on ``conn`` fail now."""
        shutdown_socket(self.socket_of(conn))

    def socket_of(self, conn: Any) -> int:
        """The connection's socket file descriptor."""
        raise NotImplementedError

    def connect(self, dsn: str | None, kwargs: Mapping[str, Any], timeout: float) -> Any:
        raise NotImplementedError

    def close(self, conn: Any) -> None:
        raise NotImplementedError

    def settle(self, conn: Any, timeout: float) -> bool:
        return False

    def rollback(self, conn: Any) -> None:
        raise NotImplementedError

    def full_reset(self, conn: Any) -> None:
        raise NotImplementedError

    def ping(self, conn: Any) -> None:
        raise NotImplementedError

    def in_recovery(self, conn: Any) -> bool:
        """Whether the server is a standby; see :meth:`AsyncAdapter.in_recovery`."""
        raise NotImplementedError

    def end_block(self, conn: Any, failed: bool) -> None:
        """Commit (``failed`` false) or roll back, for ``transactional_context``."""

    def undo(self, conn: Any, undo: list[Any]) -> None:
        """Revert what the driver's lease class noted during a lease."""

    # LISTEN/NOTIFY, for the listener's own connection (pgmarina.listener).
    # The listener's thread waits on :meth:`socket_of` itself.

    def listen(self, conn: Any, channel: str) -> None:
        """``LISTEN channel`` (quoted), in autocommit."""
        raise NotImplementedError

    def unlisten(self, conn: Any, channel: str) -> None:
        """``UNLISTEN channel``."""
        raise NotImplementedError

    def drain_notifications(self, conn: Any, deliver: Callable[[str, str, int], None]) -> None:
        """Read what the socket holds, without blocking, and hand every
        notification received so far to ``deliver(channel, payload, pid)``;
        raise if the connection is lost."""
        raise NotImplementedError


# libpq gives no SQLSTATE for a failed connect, only the server's message
# (and its own, for a password it was never given).  These are the English
# texts of the SQLSTATE 28xxx and 3D000 errors a server sends at login; a
# server with translated messages (lc_messages) is not recognised, and its
# rejections are retried as outages, which is what the pool did before.
_REJECTED = re.compile(
    r"FATAL:\s+(?:"
    r"\w+ authentication failed for user"  # 28P01 password, 28000 ident/peer/ldap...
    r"|role \".*\" does not exist"  # 28000
    r"|role \".*\" is not permitted to log in"  # 28000
    r"|no pg_hba\.conf entry for"  # 28000
    r"|pg_hba\.conf rejects connection"  # 28000
    r"|database \".*\" does not exist"  # 3D000
    r")"
    r"|fe_sendauth: no password supplied"  # libpq: the server asked, none given
)


def reported_standby(value: Any) -> bool | None:
    """The ``in_hot_standby`` a server reported (``"on"``/``"off"``), or ``None`` if none."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if value == "on":
        return True
    if value == "off":
        return False
    return None


def rejected_for_good(sqlstate: str | None, message: str) -> bool:
    """Whether a connect error is a rejection that waiting will not mend.

    Args:
        sqlstate: The error's SQLSTATE, when the driver has one.
        message: The error's text, searched when there is no SQLSTATE.
    """
    if sqlstate:
        return sqlstate.startswith("28") or sqlstate == "3D000"
    return _REJECTED.search(message) is not None


# libpq's complaints about a value in the connection string, made before it
# connects at all (fe-connect.c): each quotes the value, which in a malformed
# DSN can be the password ("postgresql://u:pw/x@h" makes "pw" the port).
_CONNINFO_COMPLAINT = re.compile(
    r"^(?:connection is bad: )?(?:invalid \w+ value|invalid port number"
    r"|could not match \d+ |could not parse network address)"
)


def conninfo_complaint(message: str, dsn: str | None, kwargs: Mapping[str, Any]) -> str | None:
    """libpq's complaint about a connection-string value, scrubbed; ``None`` for any
    other connect error.

    The adapters raise the scrubbed text as a ``ValueError`` of their own instead of
    the driver's error, so no copy of the value is left in its ``__context__``.
    """
    text = one_line(message)
    if _CONNINFO_COMPLAINT.search(text) is None:
        return None
    return scrub(text, dsn, kwargs)


def with_connect_timeout(
    dsn: str | None, kwargs: Mapping[str, Any], timeout: float
) -> dict[str, Any]:
    """``kwargs`` plus libpq's ``connect_timeout`` unless the caller set one.

    ``timeout`` is the pool's, more than 0; ``inf`` (no limit) sets none.
    """
    out = dict(kwargs)
    if timeout != _INF and "connect_timeout" not in out and "connect_timeout" not in (dsn or ""):
        out["connect_timeout"] = max(2, int(timeout + 0.999))  # libpq: whole seconds, >= 2
    return out


def shutdown_socket(fd: int) -> None:
    """Shut a socket down in both directions, waking any thread blocked on it.

    Closing the descriptor would not wake a blocked ``recv``; shutting the
    socket down does, and leaves the descriptor for its owner to close.
    """
    import socket

    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
