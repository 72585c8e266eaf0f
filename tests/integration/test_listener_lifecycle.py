"""The LISTEN/NOTIFY listener's life beside its pool (issue 15), outside the conformance
harness, which holds on to every pool it makes."""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
from typing import Any

import pytest

from helpers import backends, eventually
from pgmarina import Pool


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_a_forgotten_thread_pool_takes_its_listener_thread_and_connection_along(
    pg: Any, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Pool dropped without close() must not leave its listener's thread listening on a
    server connection for ever (the thread holds the listener, not the pool)."""
    app = f"forgotten_{uuid.uuid4().hex[:8]}"
    pool = Pool(pg.dsn, driver=driver, min_size=0, application_name=app)
    pool.open()
    pool.listen("forgotten", print)
    name = f"{pool.name} listener"
    assert any(t.name == name for t in threading.enumerate())
    assert backends(pg, app) == 1
    del pool
    gc.collect()

    async def freed() -> None:
        await eventually(lambda: not any(t.name == name for t in threading.enumerate()),
                         timeout=10, what="the listener's thread exits")
        await eventually(lambda: backends(pg, app) == 0, timeout=10,
                         what="the listener's connection closes")

    asyncio.run(freed())
