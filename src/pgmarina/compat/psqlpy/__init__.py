"""psqlpy's pool and connection API on pgmarina: change the import, keep the code.

::

    # was: from psqlpy import ConnectionPool
    from pgmarina.compat.psqlpy import ConnectionPool

    db_pool = ConnectionPool(dsn="postgres://app@db/app", max_db_pool_size=10)

    async def main() -> None:
        connection = await db_pool.connection()
        query = "SELECT * FROM users WHERE id = $1"
        rows = (await connection.execute(query, [1])).result()
        connection.close()

Underneath is pgmarina's :class:`~pgmarina.AsyncPool` on asyncpg.  This
package translates; pgmarina decides who gets a connection, when one is
opened, checked, reset or closed.  Their name on the left, our call on the
right:

==================================  ===============================================
``ConnectionPool(...)`` params      a DSN (:func:`build_dsn`; ``dsn`` overrides the
                                    parts) and asyncpg's connect keywords
``connect(...)`` / builder          the same pool; ``await connect(...)`` is one
                                    connection
``max_db_pool_size``                ``max_size`` (``min_size`` is 0: lazy)
``conn_recycling_method``           ``Fast``: defaults; ``Verified``:
                                    ``check_window=0``; ``Clean``: also ``reset="full"``
``connect_timeout_sec/nanosec``     asyncpg's ``timeout`` and the pool's
                                    ``connect_timeout``
``keepalives*``, ``tcp_user_...``   socket options set after connect (TCP only)
``options``, ``application_name``   startup parameters (``server_settings``)
first use on an event loop          an ``AsyncPool`` for that loop; another loop
                                    drops the old one's connections
``connection()`` / ``acquire()``    ``acquire()``, wrapped in :class:`Connection`
``Connection.close()``              the lease's release (reset in the background)
``execute``/``fetch``..             asyncpg's ``fetch``/``executemany``/``execute``
``QueryResult.result()``            the asyncpg records as dicts (or tuples)
``transaction()`` / ``cursor()``    ``BEGIN ..``/``COMMIT`` / ``DECLARE``/``FETCH``
``status()`` / ``resize()``         ``stats()`` / ``resize(0, new_max_size)``
``listener()``                      the pool's listener (:mod:`pgmarina.listener`)
psqlpy's exceptions                 the same names, asyncpg's error as ``__cause__``
==================================  ===============================================
"""

from __future__ import annotations

from . import exceptions, extra_types, row_factories
from ._connection import (
    Column,
    Connection,
    Cursor,
    IsolationLevel,
    PreparedStatement,
    QueryResult,
    ReadVariant,
    SingleQueryResult,
    Transaction,
)
from ._listener import Listener, ListenerNotificationMsg
from ._pool import (
    ConnectionPool,
    ConnectionPoolBuilder,
    ConnectionPoolStatus,
    ConnRecyclingMethod,
    LoadBalanceHosts,
    SslMode,
    TargetSessionAttrs,
    build_dsn,
    connect,
    connect_pool,
)
from .exceptions import Error

__all__ = [
    "Column", "ConnRecyclingMethod", "Connection", "ConnectionPool", "ConnectionPoolBuilder",
    "ConnectionPoolStatus", "Cursor", "Error", "IsolationLevel", "Listener",
    "ListenerNotificationMsg", "LoadBalanceHosts", "PreparedStatement", "QueryResult",
    "ReadVariant", "SingleQueryResult", "SslMode", "TargetSessionAttrs", "Transaction",
    "build_dsn", "connect", "connect_pool", "exceptions", "extra_types", "row_factories",
]
