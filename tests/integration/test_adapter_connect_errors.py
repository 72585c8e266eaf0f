"""Each adapter tells a rejection (waiting will not mend it) from an outage.

libpq gives no SQLSTATE for a failed connect, so the psycopg adapters read the
server's message; asyncpg keeps the SQLSTATE.  The errors here are the drivers'
own, raised by a real server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from pgmarina.adapters.asyncpg import AsyncpgAdapter
from pgmarina.adapters.base import rejected_for_good
from pgmarina.adapters.psycopg import AsyncPsycopgAdapter, PsycopgAdapter
from pgmarina.adapters.psycopg2 import Psycopg2Adapter

ADAPTERS = [AsyncpgAdapter(), AsyncPsycopgAdapter(), PsycopgAdapter(), Psycopg2Adapter()]


def _connect_error(adapter: Any, dsn: str) -> BaseException:
    """What ``adapter.connect`` raises for ``dsn``."""
    try:
        if isinstance(adapter, (AsyncpgAdapter, AsyncPsycopgAdapter)):
            conn = asyncio.run(adapter.connect(dsn, {}))
        else:
            conn = adapter.connect(dsn, {}, 5.0)
    except Exception as exc:
        return exc
    adapter.terminate(conn)
    raise AssertionError(f"{dsn} connected")


def _dsn(pg: Any, *, user: str | None = None, dbname: str | None = None, port: int = 0) -> str:
    auth = quote(user or pg.user, safe="")
    if pg.password is not None and user is None:
        auth += ":" + quote(pg.password, safe="")
    return f"postgresql://{auth}@{pg.host}:{port or pg.port}/{quote(dbname or pg.dbname)}"


def _missing(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


REJECTED: dict[str, Callable[[Any], str]] = {
    "missing database": lambda pg: _dsn(pg, dbname=_missing("nodb")),
    "missing role": lambda pg: _dsn(pg, user=_missing("norole")),
}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: type(a).__name__)
@pytest.mark.parametrize("case", sorted(REJECTED))
def test_a_missing_database_or_role_is_permanent(adapter: Any, case: str, pg: Any) -> None:
    exc = _connect_error(adapter, REJECTED[case](pg))
    assert adapter.is_permanent(exc), f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: type(a).__name__)
def test_a_refused_connection_is_not_permanent(adapter: Any, pg: Any) -> None:
    exc = _connect_error(adapter, _dsn(pg, port=1))
    assert not adapter.is_permanent(exc), f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: type(a).__name__)
def test_errors_that_are_not_the_drivers_are_not_permanent(adapter: Any) -> None:
    assert not adapter.is_permanent(RuntimeError('FATAL:  database "x" does not exist'))
    assert not adapter.is_permanent(TimeoutError("connect (and configure) timed out after 2s"))


@pytest.mark.parametrize(
    ("sqlstate", "message", "permanent"),
    [
        (None, 'failed: FATAL:  password authentication failed for user "app"', True),
        (None, 'failed: FATAL:  Ident authentication failed for user "app"', True),
        (None, 'failed: FATAL:  role "ghost" does not exist', True),
        (None, 'failed: FATAL:  role "app" is not permitted to log in', True),
        (None, 'failed: FATAL:  database "nodb" does not exist', True),
        (None, 'FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "app", database "x"', True),
        (None, "failed: fe_sendauth: no password supplied", True),
        (None, "failed: FATAL:  the database system is starting up", False),  # 57P03
        (None, "failed: FATAL:  sorry, too many clients already", False),  # 53300
        (None, "failed: FATAL:  remaining connection slots are reserved for roles with", False),
        (None, "failed: Connection refused", False),
        (None, "server closed the connection unexpectedly", False),
        (None, 'FATAL:  la base de données « x » n\'existe pas', False),  # translated: unknown
        ("28P01", "", True),
        ("28000", "", True),
        ("3D000", "", True),
        ("57P03", "", False),
        ("53300", "", False),
        ("08006", 'FATAL:  database "x" does not exist', False),  # the SQLSTATE decides
    ],
)
def test_rejected_for_good_knows_the_login_errors_waiting_will_not_mend(
    sqlstate: str | None, message: str, permanent: bool
) -> None:
    assert rejected_for_good(sqlstate, message) is permanent
