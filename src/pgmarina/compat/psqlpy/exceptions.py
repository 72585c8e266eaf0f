"""psqlpy's exception names, for code that catches them.

The tree is psqlpy 0.13's: everything derives from :class:`Error`, the pool,
connection, transaction, cursor and listener errors from
:class:`InterfaceError`.  The façade raises the specific ones
(:class:`ConnectionExecuteError` for a query that failed on a connection,
:class:`TransactionExecuteError` in a transaction, ...), each with what went
wrong underneath (the ``asyncpg`` error, or pgmarina's pool error) as its
``__cause__``, so ``except psqlpy_error as e: e.__cause__.sqlstate`` reaches
the server's error code.
"""

from __future__ import annotations

__all__ = [
    "BaseConnectionError", "BaseConnectionPoolError", "BaseCursorError", "BaseListenerError",
    "BaseTransactionError", "ConnectionClosedError", "ConnectionExecuteError",
    "ConnectionPoolBuildError", "ConnectionPoolConfigurationError", "ConnectionPoolExecuteError",
    "CursorCloseError", "CursorClosedError", "CursorFetchError", "CursorStartError", "DataError",
    "DatabaseError", "Error", "IntegrityError", "InterfaceError", "InternalError",
    "ListenerCallbackError", "ListenerClosedError", "ListenerStartError",
    "MacAddrConversionError", "NotSupportedError", "OperationalError", "ProgrammingError",
    "PyToRustValueMappingError", "RustToPyValueMappingError", "TransactionBeginError",
    "TransactionClosedError", "TransactionCommitError", "TransactionExecuteError",
    "TransactionRollbackError", "TransactionSavepointError", "UUIDValueConvertError",
    "WarningError",
]


class WarningError(Exception):
    """Important warnings (psqlpy raises none the façade would)."""


class Error(Exception):
    """Base of every error below: catch this to catch them all."""


class InterfaceError(Error):
    """The client side went wrong rather than the database."""


class DatabaseError(Error):
    """The database went wrong."""


class DataError(DatabaseError):
    """Bad data: a value out of range, a conversion that cannot be made."""


class OperationalError(DatabaseError):
    """The database's operation, outside the programmer's control."""


class IntegrityError(DatabaseError):
    """A constraint was violated."""


class InternalError(DatabaseError):
    """The database's internal state is wrong."""


class ProgrammingError(DatabaseError):
    """A mistake in the SQL or its parameters."""


class NotSupportedError(DatabaseError):
    """Something the database does not support."""


class BaseConnectionPoolError(InterfaceError):
    """Base of the pool's errors."""


class ConnectionPoolBuildError(BaseConnectionPoolError):
    """The pool could not be built."""


class ConnectionPoolConfigurationError(BaseConnectionPoolError):
    """A pool parameter is wrong (also a ``ValueError`` here, as pgmarina's are)."""


class ConnectionPoolExecuteError(BaseConnectionPoolError):
    """The pool could not give a connection: it is closed, or cannot connect."""


class BaseConnectionError(InterfaceError):
    """Base of a connection's errors."""


class ConnectionExecuteError(BaseConnectionError):
    """A query on a connection failed."""


class ConnectionClosedError(BaseConnectionError):
    """The connection went back to the pool; it cannot be used any more."""


class BaseTransactionError(InterfaceError):
    """Base of a transaction's errors."""


class TransactionBeginError(BaseTransactionError):
    """``BEGIN`` failed, or the transaction was begun twice."""


class TransactionCommitError(BaseTransactionError):
    """``COMMIT`` failed."""


class TransactionRollbackError(BaseTransactionError):
    """``ROLLBACK`` failed."""


class TransactionSavepointError(BaseTransactionError):
    """A savepoint command failed."""


class TransactionExecuteError(BaseTransactionError):
    """A query in a transaction failed."""


class TransactionClosedError(BaseTransactionError):
    """The transaction has ended, or its connection went back to the pool."""


class BaseCursorError(InterfaceError):
    """Base of a cursor's errors."""


class CursorStartError(BaseCursorError):
    """``DECLARE`` failed, or the cursor was started twice."""


class CursorCloseError(BaseCursorError):
    """``CLOSE`` failed."""


class CursorFetchError(BaseCursorError):
    """A fetch failed."""


class CursorClosedError(BaseCursorError):
    """The cursor is closed, or was never started."""


class UUIDValueConvertError(DataError):
    """A value could not be read as a UUID."""


class MacAddrConversionError(DataError):
    """A value could not be read as a MAC address."""


class RustToPyValueMappingError(DataError):
    """psqlpy's name for a column value it cannot convert (kept for ``except``)."""


class PyToRustValueMappingError(DataError):
    """psqlpy's name for a parameter it cannot convert (kept for ``except``)."""


class BaseListenerError(InterfaceError):
    """Base of the listener's errors."""


class ListenerStartError(BaseListenerError):
    """The listener could not start, or is used before ``startup()``."""


class ListenerClosedError(BaseListenerError):
    """The listener was shut down."""


class ListenerCallbackError(BaseListenerError):
    """A callback is not an ``async def`` function."""
