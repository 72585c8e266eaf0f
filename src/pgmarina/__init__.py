"""pgmarina: a fast, hard-to-break PostgreSQL connection pool.

``AsyncPool`` serves asyncio programs on asyncpg or psycopg 3; ``Pool`` serves
threaded programs on psycopg 3 or psycopg2.  Both are thin shells around one
sans-IO core (:mod:`pgmarina._core`) that makes every pool decision.
"""

from ._core import PoolStats
from ._core.hosts import HostStats
from ._core.stats import Histogram
from ._lease import Lease, reset_on_release, unwrap
from ._observe import LeakInfo
from .errors import (
    ConnectionReleasedError,
    DriverNotInstalled,
    IllegalTransition,
    PoolClosed,
    PoolConnectError,
    PoolError,
    PoolNotOpen,
    PoolTimeout,
    TooManyWaiters,
)
from .shells.aio import AsyncPool
from .shells.threaded import Pool

__version__ = "0.1.0"

__all__ = [
    "AsyncPool",
    "ConnectionReleasedError",
    "DriverNotInstalled",
    "Histogram",
    "HostStats",
    "IllegalTransition",
    "LeakInfo",
    "Lease",
    "Pool",
    "PoolClosed",
    "PoolConnectError",
    "PoolError",
    "PoolNotOpen",
    "PoolStats",
    "PoolTimeout",
    "TooManyWaiters",
    "reset_on_release",
    "unwrap",
]
