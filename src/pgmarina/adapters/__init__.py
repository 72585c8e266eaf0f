"""Driver adapters, and ``resolve()`` which turns ``driver=`` into one."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import DriverNotInstalled
from .base import BROKEN, BUSY, CLEAN, IN_TRANSACTION, AsyncAdapter, SyncAdapter

__all__ = [
    "BROKEN",
    "BUSY",
    "CLEAN",
    "IN_TRANSACTION",
    "AsyncAdapter",
    "SyncAdapter",
    "resolve",
]

# driver name -> (module holding the adapter, adapter class, driver package, extra)
_ASYNC = {
    "asyncpg": ("asyncpg", "AsyncpgAdapter", "asyncpg", "asyncpg"),
    "psycopg": ("psycopg", "AsyncPsycopgAdapter", "psycopg", "psycopg"),
}
_SYNC = {
    "psycopg": ("psycopg", "PsycopgAdapter", "psycopg", "psycopg"),
    "psycopg2": ("psycopg2", "Psycopg2Adapter", "psycopg2", "psycopg2"),
}


def resolve(driver: Any, *, sync: bool) -> Any:
    """Return an adapter instance for ``driver`` (a name or an adapter).

    Raises:
        TypeError: ``driver`` is neither a known name nor an adapter of the
            right kind (async for ``AsyncPool``, sync for ``Pool``).
        ValueError: unknown driver name.
        DriverNotInstalled: the driver package cannot be imported.
    """
    kind, table = (SyncAdapter, _SYNC) if sync else (AsyncAdapter, _ASYNC)
    shell = "Pool" if sync else "AsyncPool"
    if isinstance(driver, kind):
        return driver
    if isinstance(driver, (AsyncAdapter, SyncAdapter)):
        raise TypeError(f"driver: {type(driver).__name__} is not an adapter for {shell}")
    if not isinstance(driver, str):
        raise TypeError(f"driver must be a driver name or an adapter, not {type(driver).__name__}")
    try:
        module, cls, package, extra = table[driver]
    except KeyError:
        names = ", ".join(repr(n) for n in table)
        raise ValueError(f"driver {driver!r} is not supported by {shell}; choose {names}") from None
    try:
        importlib.import_module(package)
    except ImportError as exc:
        raise DriverNotInstalled(
            f"driver {driver!r} needs the {package} package: pip install 'pgmarina[{extra}]'"
        ) from exc
    adapter_module = importlib.import_module(f"{__name__}.{module}")
    return getattr(adapter_module, cls)()
