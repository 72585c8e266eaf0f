"""Several hosts against real servers: a primary and a streaming standby.

Role detection, read/write routing, a dead host skipped with backoff, and the
failover: the standby promoted under a running read/write workload with the
old primary stopped.  Each test runs over every driver x shell pair; the async
ones with ``asyncio.run``, the thread ones with threads.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest

from pgmarina import AsyncPool, Pool

COMBOS = [("async", "asyncpg"), ("async", "psycopg"), ("sync", "psycopg"), ("sync", "psycopg2")]
IDS = [f"{shell}-{driver}" for shell, driver in COMBOS]
IN_RECOVERY = "SELECT pg_is_in_recovery()"
DSN = "postgresql://postgres@/postgres"

pytestmark = pytest.mark.private_cluster


def hosts_of(*servers: Any) -> list[str]:
    return [f"{s.host}:{s.port}" for s in servers]


def free_port() -> int:
    """A loopback port nothing listens on (a dead host)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def afetch(driver: str, conn: Any, query: str) -> Any:
    if driver == "asyncpg":
        return await conn.fetchval(query)
    cur = await conn.execute(query)
    row = await cur.fetchone() if cur.description else None
    return None if row is None else row[0]


def fetch(driver: str, conn: Any, query: str) -> Any:
    if driver == "psycopg":
        cur = conn.execute(query)
    else:
        cur = conn.cursor()
        cur.execute(query)
    row = cur.fetchone() if cur.description else None
    return None if row is None else row[0]


def make_pool(shell: str, driver: str, hosts: list[str], **options: Any) -> Any:
    options.setdefault("timeout", 10.0)
    options.setdefault("connect_timeout", 3.0)
    cls = AsyncPool if shell == "async" else Pool
    return cls(DSN, driver=driver, hosts=hosts, **options)


def roles(pool: Any) -> dict[str, str]:
    return {h.host: h.role for h in pool.stats().hosts}


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shell", "driver"), COMBOS, ids=IDS)
def test_role_detection_at_connect_marks_the_primary_and_the_standby(
    replica_pair: Any, shell: str, driver: str
) -> None:
    primary, standby = replica_pair
    hosts = hosts_of(primary, standby)
    seen: dict[str, Any] = {}

    if shell == "async":

        async def body() -> None:
            async with make_pool(shell, driver, hosts, min_size=0) as pool:
                async with pool.writer.connection() as w:
                    seen["writer"] = await afetch(driver, w, IN_RECOVERY)
                async with pool.reader.connection() as r:
                    seen["reader"] = await afetch(driver, r, IN_RECOVERY)
                seen["roles"] = roles(pool)

        asyncio.run(body())
    else:
        with make_pool(shell, driver, hosts, min_size=0) as pool:
            with pool.writer.connection() as w:
                seen["writer"] = fetch(driver, w, IN_RECOVERY)
            with pool.reader.connection() as r:
                seen["reader"] = fetch(driver, r, IN_RECOVERY)
            seen["roles"] = roles(pool)
    assert seen["writer"] is False
    assert seen["reader"] is True
    assert seen["roles"] == {hosts[0]: "primary", hosts[1]: "standby"}


@pytest.mark.parametrize(("shell", "driver"), COMBOS, ids=IDS)
def test_routing_sends_readers_to_the_standby_and_never_writers_to_it(
    replica_pair: Any, shell: str, driver: str
) -> None:
    """Concurrent readers and writers on a pool over both servers (the standby listed
    first, load balanced): every writer is on the primary, every reader on the standby."""
    primary, standby = replica_pair
    hosts = hosts_of(standby, primary)
    got: list[tuple[str, Any]] = []
    opts = {"max_size": 4, "min_size": 2, "load_balance_hosts": "random"}

    if shell == "async":

        async def worker(pool: Any, view: Any, kind: str) -> None:
            for _ in range(15):
                async with view.connection() as conn:
                    got.append((kind, await afetch(driver, conn, IN_RECOVERY)))

        async def body() -> None:
            async with make_pool(shell, driver, hosts, **opts) as pool:
                await asyncio.gather(
                    *(worker(pool, pool.writer, "w") for _ in range(4)),
                    *(worker(pool, pool.reader, "r") for _ in range(4)),
                )

        asyncio.run(body())
    else:
        with make_pool(shell, driver, hosts, **opts) as pool:

            def worker(view: Any, kind: str) -> None:
                for _ in range(15):
                    with view.connection() as conn:
                        got.append((kind, fetch(driver, conn, IN_RECOVERY)))

            threads = [
                threading.Thread(target=worker, args=(v, k))
                for v, k in [(pool.writer, "w")] * 4 + [(pool.reader, "r")] * 4
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert len(got) == 120
    assert {rec for kind, rec in got if kind == "w"} == {False}
    assert {rec for kind, rec in got if kind == "r"} == {True}


@pytest.mark.parametrize(("shell", "driver"), COMBOS, ids=IDS)
def test_a_dead_host_is_skipped_and_retried_only_after_its_backoff(
    pg: Any, shell: str, driver: str
) -> None:
    """The first host listed is dead: 30 callers are served by the live one, and the dead
    host costs a few failed connects in all (its backoff), not one per caller."""
    dead = f"127.0.0.1:{free_port()}"
    hosts = [dead, f"{pg.host}:{pg.port}"]
    opts = {"max_size": 6, "min_size": 0, "backoff_max": 0.5}
    served = []

    if shell == "async":

        async def one(pool: Any) -> None:
            async with pool.connection() as conn:
                await afetch(driver, conn, "SELECT pg_sleep(0.05)")
                served.append(1)

        async def body() -> Any:
            async with make_pool(shell, driver, hosts, **opts) as pool:
                await asyncio.gather(*(one(pool) for _ in range(30)))
                return pool.stats()

        stats = asyncio.run(body())
    else:
        with make_pool(shell, driver, hosts, **opts) as pool:

            def one() -> None:
                with pool.connection() as conn:
                    fetch(driver, conn, "SELECT pg_sleep(0.05)")
                    served.append(1)

            threads = [threading.Thread(target=one) for _ in range(30)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            stats = pool.stats()
    assert len(served) == 30
    by_host = {h.host: h for h in stats.hosts}
    assert by_host[dead].connects == 0
    assert not by_host[dead].up
    # Well under one per caller: each failure puts the host down for a backoff period.
    assert 1 <= by_host[dead].connects_failed <= 8, by_host[dead]
    assert by_host[hosts[1]].connects >= 1


@pytest.mark.slow
@pytest.mark.parametrize("outage", [0.0, 2.5], ids=["promoted-at-once", "promoted-after-2.5s"])
@pytest.mark.parametrize(("shell", "driver"), COMBOS, ids=IDS)
def test_failover_promotes_the_standby_under_load_with_no_wrong_role_writer(
    replica_pair: Any, shell: str, driver: str, outage: float
) -> None:
    """THE failover: writers and readers run; the primary is stopped and the standby
    promoted, at once or ``outage`` seconds later (when the pool asks the standby again
    only every ``backoff_max``).  No read-write caller is ever handed a connection to a
    server in recovery, and writes succeed again soon after ``pg_ctl promote`` returns
    (issue 13: < 2 s)."""
    primary, standby = replica_pair
    with _psycopg_conn(primary) as c:
        c.execute("CREATE TABLE failover (x int)")
    hosts = hosts_of(primary, standby)
    opts = {"max_size": 8, "min_size": 4, "timeout": 3.0, "keepalive": 0.5}
    rec: dict[str, Any] = {"wrong": 0, "writes": 0, "reads": 0, "errors": 0, "first": None}
    stop = threading.Event()
    promoted_at: list[float] = []  # when pg_ctl promote started, and when it returned

    def note_role(in_recovery: Any) -> None:
        # Counted as soon as the writer has its connection, whatever happens next.
        if in_recovery is not False:
            rec["wrong"] += 1

    def note_write() -> None:
        # No write can succeed between the stop and the promotion: the first one after
        # the promotion began is the first on the new primary.
        rec["writes"] += 1
        if promoted_at and rec["first"] is None:
            rec["first"] = time.monotonic()

    def fail_over() -> None:
        time.sleep(0.5)
        primary.stop("fast")
        time.sleep(outage)
        promoted_at.append(time.monotonic())
        standby.promote()
        promoted_at.append(time.monotonic())

    if shell == "async":

        async def writer(pool: Any) -> None:
            while not stop.is_set():
                try:
                    async with pool.writer.connection() as conn:
                        note_role(await afetch(driver, conn, IN_RECOVERY))
                        await afetch(driver, conn, "INSERT INTO failover VALUES (1)")
                    note_write()
                except Exception:
                    rec["errors"] += 1
                    await asyncio.sleep(0.01)

        async def reader(pool: Any) -> None:
            while not stop.is_set():
                try:
                    async with pool.reader.connection() as conn:
                        await afetch(driver, conn, "SELECT count(*) FROM failover")
                    rec["reads"] += 1
                except Exception:
                    rec["errors"] += 1
                    await asyncio.sleep(0.01)

        async def body() -> None:
            async with make_pool(shell, driver, hosts, **opts) as pool:
                tasks = [asyncio.create_task(writer(pool)) for _ in range(4)]
                tasks += [asyncio.create_task(reader(pool)) for _ in range(4)]
                await asyncio.to_thread(fail_over)
                deadline = time.monotonic() + 15
                while rec["first"] is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)  # and the workload goes on a little on the new primary
                stop.set()
                await asyncio.gather(*tasks)
                rec["roles"] = roles(pool)

        asyncio.run(body())
    else:
        lock = threading.Lock()
        with make_pool(shell, driver, hosts, **opts) as pool:

            def writer() -> None:
                while not stop.is_set():
                    try:
                        with pool.writer.connection() as conn:
                            in_recovery = fetch(driver, conn, IN_RECOVERY)
                            with lock:
                                note_role(in_recovery)
                            fetch(driver, conn, "INSERT INTO failover VALUES (1)")
                        with lock:
                            note_write()
                    except Exception:
                        with lock:
                            rec["errors"] += 1
                        time.sleep(0.01)

            def reader() -> None:
                while not stop.is_set():
                    try:
                        with pool.reader.connection() as conn:
                            fetch(driver, conn, "SELECT count(*) FROM failover")
                        with lock:
                            rec["reads"] += 1
                    except Exception:
                        with lock:
                            rec["errors"] += 1
                        time.sleep(0.01)

            threads = [threading.Thread(target=writer) for _ in range(4)]
            threads += [threading.Thread(target=reader) for _ in range(4)]
            for t in threads:
                t.start()
            fail_over()
            deadline = time.monotonic() + 15
            while rec["first"] is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join()
            rec["roles"] = roles(pool)
    assert rec["first"] is not None, "no write succeeded after the promotion"
    began, returned = promoted_at
    # Negative: writes were going again before pg_ctl noticed the promotion was done.
    recovery = rec["first"] - returned
    print(
        f"\n{shell}-{driver}, outage {outage}s: first write {recovery * 1000:+.0f} ms after "
        f"pg_ctl promote returned ({(rec['first'] - began) * 1000:.0f} ms after it began; "
        f"promote took {(returned - began) * 1000:.0f} ms); {rec['writes']} writes, "
        f"{rec['reads']} reads, {rec['errors']} errors during the outage, "
        f"{rec['wrong']} wrong-role writers"
    )
    assert rec["wrong"] == 0
    assert recovery < 6.0  # issue 13 asks < 2 s; generous here, the machine is shared
    assert rec["roles"][hosts[1]] == "primary"


def _psycopg_conn(server: Any) -> Any:
    import psycopg

    return psycopg.connect(**server.conninfo_kwargs(), autocommit=True)


@pytest.mark.slow
@pytest.mark.parametrize(("shell", "driver"), COMBOS, ids=IDS)
def test_a_keepalive_ping_notices_a_promotion_without_a_new_connect(
    replica_pair: Any, shell: str, driver: str
) -> None:
    """An idle connection to the standby is pinged after the promotion: the pool learns the
    host is a primary from the ping (``in_hot_standby`` reported again), with no connect."""
    primary, standby = replica_pair
    hosts = hosts_of(primary, standby)
    opts = {"min_size": 0, "keepalive": 0.2, "housekeeping_interval": 0.1, "check_window": None}
    seen: dict[str, Any] = {}

    def promoted(pool: Any) -> bool:
        return bool(pool.stats().hosts[1].role == "primary")

    if shell == "async":

        async def body() -> None:
            async with make_pool(shell, driver, hosts, **opts) as pool:
                async with pool.reader.connection() as conn:
                    seen["before"] = await afetch(driver, conn, IN_RECOVERY)
                await asyncio.to_thread(standby.promote)
                deadline = time.monotonic() + 5
                while not promoted(pool) and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                seen["after"] = pool.stats().hosts[1]

        asyncio.run(body())
    else:
        with make_pool(shell, driver, hosts, **opts) as pool:
            with pool.reader.connection() as conn:
                seen["before"] = fetch(driver, conn, IN_RECOVERY)
            standby.promote()
            deadline = time.monotonic() + 5
            while not promoted(pool) and time.monotonic() < deadline:
                time.sleep(0.02)
            seen["after"] = pool.stats().hosts[1]
    after = seen["after"]
    assert seen["before"] is True
    assert (after.role, after.role_changes, after.connects) == ("primary", 1, 1), after
