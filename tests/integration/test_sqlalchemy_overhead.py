"""What an engine's checkout costs on ``PgMarinaPool``, compared with SQLAlchemy's own pools.

SQLAlchemy rolls a connection back when it comes back to the pool; pgmarina's
``reset="auto"`` then finds it clean and must add nothing.  These tests count,
on the server (``log_statement=all``), the statements of a run of everyday
checkouts (``with engine.connect() as c: c.execute(text("SELECT 1"))``) on
each pool, engine beside engine: pgmarina may not add a round trip to any.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from pgmarina.contrib.sqlalchemy import PgMarinaPool

CYCLES = 20
SELECT_1 = text("SELECT 1")

#: A statement the server logged (simple protocol, or an extended-protocol execute).
_LOGGED = re.compile(r"LOG:  (statement|execute [^:]*): ")


def _statements(log: str, app: str) -> list[str]:
    """The statements ``app``'s backends sent, as the server logged them."""
    # The clusters log with "%m [%p] %q%a ": the application name follows the pid.
    return [
        line.split(": ", 1)[1] for line in log.splitlines()
        if f"] {app} " in line and _LOGGED.search(line)
    ]


@pytest.fixture
def logging_pg(make_private_pg: Callable[..., Any]) -> Any:
    """A throwaway cluster that logs every statement."""
    return make_private_pg({"log_statement": "all"})


def _names() -> dict[str, str]:
    return {pool: f"sqla_{pool}_{uuid.uuid4().hex[:8]}" for pool in ("queuepool", "marina")}


def _engines(
    create: Callable[..., Any], url: sa.URL, apps: dict[str, str],
    connect_args: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """One engine per pool (SQLAlchemy's default, and pgmarina), each named by its app."""
    return {
        pool: create(
            url,
            poolclass=PgMarinaPool if pool == "marina" else None,
            pool_size=1,
            max_overflow=0,
            connect_args=connect_args(app),
        )
        for pool, app in apps.items()
    }


def _sent(logging_pg: Any, start: int, apps: dict[str, str]) -> dict[str, list[str]]:
    """What each pool's engine sent since the log held ``start`` lines; three a cycle
    (BEGIN, SELECT, ROLLBACK) on SQLAlchemy's own pool."""
    log = logging_pg.read_log()[start:]
    sent = {pool: _statements(log, app) for pool, app in apps.items()}
    assert len(sent["queuepool"]) == 3 * CYCLES, sent["queuepool"][:6]
    return sent


@pytest.mark.private_cluster
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_a_sync_checkout_sends_no_statement_more_than_queuepool_no_second_reset(
    logging_pg: Any, driver: str
) -> None:
    """pgmarina's release does not repeat (or add to) SQLAlchemy's rollback on return."""
    url = sa.make_url(logging_pg.dsn).set(drivername=f"postgresql+{driver}")
    apps = _names()
    engines = _engines(sa.create_engine, url, apps, lambda app: {"application_name": app})
    try:
        for engine in engines.values():
            with engine.connect() as c:  # the first connect: the dialect's own queries
                c.execute(SELECT_1)
        start = len(logging_pg.read_log())
        for engine in engines.values():
            for _ in range(CYCLES):
                with engine.connect() as c:
                    c.execute(SELECT_1)
    finally:
        for engine in engines.values():
            engine.dispose()
    sent = _sent(logging_pg, start, apps)
    assert sent["marina"] == sent["queuepool"]


@pytest.mark.private_cluster
@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
def test_an_async_checkout_sends_no_statement_more_than_queuepool_no_second_reset(
    logging_pg: Any, driver: str
) -> None:
    """The same through ``create_async_engine`` (AsyncAdaptedQueuePool beside pgmarina)."""
    url = sa.make_url(logging_pg.dsn).set(drivername=f"postgresql+{driver}")
    apps = _names()

    def connect_args(app: str) -> dict[str, Any]:
        if driver == "asyncpg":
            return {"server_settings": {"application_name": app}}
        return {"application_name": app}

    async def run() -> int:
        engines = _engines(create_async_engine, url, apps, connect_args)
        try:
            for engine in engines.values():
                async with engine.connect() as c:
                    await c.execute(SELECT_1)
            start = len(logging_pg.read_log())
            for engine in engines.values():
                for _ in range(CYCLES):
                    async with engine.connect() as c:
                        await c.execute(SELECT_1)
            return start
        finally:
            for engine in engines.values():
                await engine.dispose()

    start = asyncio.run(run())
    sent = _sent(logging_pg, start, apps)
    # asyncpg names its prepared statements per connection: compare the SQL only.
    plain = {pool: [s.split(": ", 1)[-1] for s in got] for pool, got in sent.items()}
    assert plain["marina"] == plain["queuepool"]
