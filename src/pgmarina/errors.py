"""The errors pgmarina raises, named after the condition that caused them.

Every error derives from :class:`PoolError`, so ``except pgmarina.PoolError``
catches anything the pool itself decided.  Errors raised by the driver while
*you* use a connection (a syntax error, a unique violation…) are passed through
untouched: the pool only wraps driver errors where it adds meaning, such as
"the pool has been failing to connect for 7.2 s".
"""

from __future__ import annotations

__all__ = [
    "ConnectionReleasedError",
    "DriverNotInstalled",
    "IllegalTransition",
    "PoolClosed",
    "PoolConnectError",
    "PoolError",
    "PoolNotOpen",
    "PoolTimeout",
    "TooManyWaiters",
]


class PoolError(Exception):
    """Base class of every error the pool raises on its own account."""


class PoolClosed(PoolError):
    """The pool is closing or closed, so it hands out nothing more."""


class PoolNotOpen(PoolError):
    """The pool has not been opened yet (call ``open()`` or use ``async with``)."""


class PoolTimeout(PoolError, TimeoutError):
    """No connection could be handed out within the acquire timeout.

    When the pool was failing to connect at the time, ``__cause__`` holds the
    last connect error, so the traceback says why no connection came.
    """


class TooManyWaiters(PoolError):
    """``max_waiting`` callers are already queued; this one is refused at once."""


class PoolConnectError(PoolError):
    """The pool could not open a connection to the server.

    Raised at once (fail fast) when the pool has been failing to connect for
    longer than ``fail_fast_after``, and at once, from the first failure, when
    the server rejects the pool's connects for a reason waiting will not mend
    (wrong password, no such role or database).  ``__cause__`` is the driver's
    own error.
    """


class ConnectionReleasedError(PoolError):
    """The connection was used after it went back to the pool.

    The object you hold is a lease on a pooled connection; once released (by
    leaving ``async with pool.connection()`` or calling ``release()``) it no
    longer refers to any server connection.
    """


class IllegalTransition(PoolError):
    """Internal: the pool core was asked to move an entry in a way it never allows.

    Seeing this means a bug in pgmarina (or a connection released twice through
    a back door); the core refuses rather than corrupt its bookkeeping.
    """


class DriverNotInstalled(PoolError, ImportError):
    """The driver named by ``driver=`` cannot be imported."""
