"""Logging of an outage: one logger tree, WARNING while connects fail, INFO on recovery."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import quote

import pytest

from faultproxy import FaultProxy
from helpers import eventually
from pgmarina import AsyncPool, Pool

PASSWORD = "Log-s3cret-pw"


def _dsn(pg: Any, proxy: FaultProxy) -> str:
    return (
        f"postgresql://{quote(pg.user)}:{PASSWORD}@{proxy.host}:{proxy.port}/{quote(pg.dbname)}"
    )


def _check_outage_log(records: list[logging.LogRecord], name: str) -> None:
    mine = [r for r in records if r.getMessage().startswith(f"{name}:")]
    assert all(r.name == "pgmarina" or r.name.startswith("pgmarina.") for r in mine)
    failed = [r for r in mine if "connect failed" in r.getMessage()]
    assert failed and all(r.levelno == logging.WARNING for r in failed)
    assert "retrying in" in failed[0].getMessage()  # the backoff, said
    back = [r for r in mine if "connected again after failing for" in r.getMessage()]
    assert len(back) == 1 and back[0].levelno == logging.INFO
    assert records.index(back[0]) > records.index(failed[0])
    for r in records:
        assert PASSWORD not in r.getMessage()


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_a_thread_pool_logs_its_outage_and_its_recovery_without_secrets(
    pg: Any, pg_proxy: FaultProxy, caplog: pytest.LogCaptureFixture, driver: str
) -> None:
    """Recovery after connect failures was not logged at all: an operator saw the
    warnings stop and could not tell whether the pool came back."""
    caplog.set_level(logging.INFO, logger="pgmarina")
    pg_proxy.stop_accepting()
    pool = Pool(_dsn(pg, pg_proxy), driver=driver, name=f"outage-{driver}", min_size=1,
                max_size=1, backoff_initial=0.02, backoff_max=0.05, connect_timeout=2)
    pool.open()
    try:
        eventually_sync(lambda: pool.stats().connections_failed >= 2)
        pg_proxy.start_accepting()
        pool.wait(timeout=5)
        # Logged just after the connect is counted (outside the pool's lock).
        eventually_sync(lambda: any("connected again" in r.getMessage() for r in caplog.records))
        _check_outage_log(caplog.records, f"outage-{driver}")
    finally:
        pool.close()


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
def test_an_async_pool_logs_its_outage_and_its_recovery_without_secrets(
    pg: Any, pg_proxy: FaultProxy, caplog: pytest.LogCaptureFixture, driver: str
) -> None:
    caplog.set_level(logging.INFO, logger="pgmarina")
    pg_proxy.stop_accepting()

    async def main() -> None:
        pool = AsyncPool(_dsn(pg, pg_proxy), driver=driver, name=f"a-outage-{driver}",
                         min_size=1, max_size=1, backoff_initial=0.02, backoff_max=0.05,
                         connect_timeout=2)
        await pool.open()
        try:
            await eventually(lambda: pool.stats().connections_failed >= 2)
            pg_proxy.start_accepting()
            await pool.wait(timeout=5)
        finally:
            await pool.close()

    asyncio.run(main())
    _check_outage_log(caplog.records, f"a-outage-{driver}")


def eventually_sync(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
