"""The thread Pool with ``barge_window`` on real drivers and a real server.

Barging changes who gets a returned connection, never whether one is lost
or shared: sixteen threads on three connections, each remembering which
server backend it talked to, must never see a backend in two hands at once,
and every thread must be served (past the window hand-off is strict FIFO).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pgmarina import Pool

THREADS = 16
SIZE = 3


def _backend_pid(driver: str, conn: Any) -> int:
    if driver == "psycopg":
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    else:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            row = cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_barging_threads_never_share_a_connection_and_all_get_served(
    driver: str, pg: Any
) -> None:
    pool = Pool(pg.dsn, driver=driver, min_size=SIZE, max_size=SIZE, barge_window=0.02,
                timeout=10)
    pool.open(wait=True)
    holding: dict[int, int] = {}  # backend pid -> thread index holding it
    lock = threading.Lock()
    errors: list[BaseException] = []
    counts = [0] * THREADS
    pids: set[int] = set()
    stop = threading.Event()

    def worker(i: int) -> None:
        try:
            while not stop.is_set():
                with pool.connection() as conn:
                    pid = _backend_pid(driver, conn)
                    with lock:
                        assert pid not in holding, f"backend {pid} in two hands at once"
                        holding[pid] = i
                        pids.add(pid)
                    time.sleep(0.001)
                    with lock:
                        del holding[pid]
                counts[i] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(15)
        assert not any(t.is_alive() for t in threads), "workers hung"
        assert errors == []
        assert min(counts) > 0, f"a thread was never served: {counts}"
        assert len(pids) == SIZE  # the same three backends throughout
        s = pool.stats()
        assert (s.in_use, s.waiting, s.idle, s.timeouts) == (0, 0, SIZE, 0)
        assert s.acquires == sum(counts)
        assert s.connections_opened == SIZE
        assert s.waited_acquires > 0  # the threads did contend
    finally:
        stop.set()
        pool.close()
