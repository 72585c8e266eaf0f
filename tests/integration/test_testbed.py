"""Tests of the test bed itself (tests/pgbed.py, tests/faultproxy.py), with asyncpg and psycopg
used directly.  No pgmarina here: if these fail, nothing built on the bed can be trusted."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
import pytest

from faultproxy import FaultProxy
from pgbed import Cluster, ExternalServer, Server, UnsupportedOperation

ProxyFactory = Callable[[str, int], FaultProxy]

# What asyncpg raises when the connection under a query goes away, and on later use.
ASYNCPG_CONNECTION_LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError)


def via(server: Server, proxy: FaultProxy) -> dict[str, Any]:
    """asyncpg connect kwargs for ``server``, routed through ``proxy``."""
    return {**server.connect_kwargs(), "host": proxy.host, "port": proxy.port}


def dsn_via(server: Server, proxy: FaultProxy, **params: Any) -> str:
    """A psycopg conninfo string for ``server``, routed through ``proxy``."""
    kw: dict[str, Any] = {
        **server.conninfo_kwargs(),
        "host": proxy.host,
        "port": proxy.port,
        **params,
    }
    return psycopg.conninfo.make_conninfo(**kw)


async def select_1(**connect_kwargs: Any) -> Any:
    conn = await asyncpg.connect(**connect_kwargs, timeout=10)
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def psycopg_select(conninfo: str, sql: str = "SELECT 1") -> Any:
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]


# --------------------------------------------------------------------------------------------
# Clusters
# --------------------------------------------------------------------------------------------


def test_shared_server_answers_select_1_with_asyncpg_and_psycopg(pg: Server) -> None:
    assert asyncio.run(select_1(**pg.connect_kwargs())) == 1
    assert psycopg_select(pg.dsn) == 1
    assert psycopg_select(psycopg.conninfo.make_conninfo(**pg.conninfo_kwargs())) == 1


def test_shared_cluster_listens_on_loopback_with_fast_test_settings(pg: Server) -> None:
    if not isinstance(pg, Cluster):
        pytest.skip("settings are only ours to check on a cluster the bed started")
    assert pg.host == "127.0.0.1"
    assert pg.dsn == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    assert pg.connect_kwargs() == {
        "host": "127.0.0.1",
        "port": pg.port,
        "user": "postgres",
        "database": "postgres",
    }
    with psycopg.connect(pg.dsn) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                [["listen_addresses", "fsync", "synchronous_commit", "full_page_writes",
                  "max_connections", "port", "unix_socket_directories"]],
            ).fetchall()
        )  # fmt: skip
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        "port": str(pg.port),
        "unix_socket_directories": str(pg.socket_dir),
    }


@pytest.mark.private_cluster
def test_private_cluster_starts_in_well_under_a_second(
    make_private_pg: Callable[..., Cluster],
) -> None:
    make_private_pg()  # the first one in a process may pay for initdb
    started = time.perf_counter()
    cluster = make_private_pg()
    elapsed = time.perf_counter() - started
    print(f"\nprivate cluster started in {elapsed * 1000:.0f} ms")
    assert cluster.is_running()
    assert asyncio.run(select_1(**cluster.connect_kwargs())) == 1
    assert elapsed < 2.0  # ~0.1 s here; generous for slow CI disks


@pytest.mark.private_cluster
def test_private_clusters_get_their_own_ports_and_settings(
    make_private_pg: Callable[..., Cluster], pg: Server
) -> None:
    a = make_private_pg({"max_connections": 7, "application_name": "it's quoted"})
    b = make_private_pg()
    assert len({a.port, b.port, pg.port}) == 3
    assert psycopg_select(a.dsn, "SHOW max_connections") == "7"
    assert psycopg_select(a.dsn, "SHOW application_name") == "it's quoted"
    assert psycopg_select(b.dsn, "SHOW max_connections") == "200"


@pytest.mark.private_cluster
def test_restart_keeps_the_port_and_new_connections_work(private_pg: Cluster) -> None:
    port, pid = private_pg.port, private_pg.pid
    old = psycopg.connect(private_pg.dsn, autocommit=True)
    try:
        old.execute(
            "CREATE TABLE survives_restart (x int); INSERT INTO survives_restart VALUES (1)"
        )
        private_pg.restart()
        assert private_pg.is_running()
        assert private_pg.port == port
        assert private_pg.pid != pid
        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")
    finally:
        old.close()
    assert psycopg_select(private_pg.dsn, "SELECT x FROM survives_restart") == 1
    assert asyncio.run(select_1(**private_pg.connect_kwargs())) == 1


@pytest.mark.private_cluster
def test_stopped_cluster_refuses_connections_until_started(private_pg: Cluster) -> None:
    private_pg.stop()
    assert not private_pg.is_running()
    assert private_pg.pid is None
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(select_1(**private_pg.connect_kwargs()))
    private_pg.stop()  # stopping a stopped cluster is a no-op
    private_pg.start()
    assert asyncio.run(select_1(**private_pg.connect_kwargs())) == 1


@pytest.mark.private_cluster
def test_killed_cluster_drops_connections_then_recovers_on_start(private_pg: Cluster) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(**private_pg.connect_kwargs())
        try:
            private_pg.kill()
            assert not private_pg.is_running()
            with pytest.raises(ASYNCPG_CONNECTION_LOST):
                await conn.fetchval("SELECT 1")
            with pytest.raises(ConnectionRefusedError):
                await asyncpg.connect(**private_pg.connect_kwargs())
        finally:
            conn.terminate()
        private_pg.start()
        assert await select_1(**private_pg.connect_kwargs()) == 1

    asyncio.run(scenario())
    assert "not properly shut down; automatic recovery in progress" in private_pg.read_log()


@pytest.mark.private_cluster
def test_destroy_removes_the_cluster_and_is_idempotent(private_pg: Cluster) -> None:
    directory = private_pg.directory
    assert (directory / "data" / "PG_VERSION").is_file()
    private_pg.destroy()
    private_pg.destroy()
    assert not private_pg.is_running()
    assert not directory.exists()


def test_external_server_has_connection_details_but_no_controls() -> None:
    server = ExternalServer("postgresql://alice:s%40cret@db.example:6543/app?sslmode=disable")
    assert server.dsn == "postgresql://alice:s%40cret@db.example:6543/app?sslmode=disable"
    assert server.connect_kwargs() == {
        "host": "db.example",
        "port": 6543,
        "user": "alice",
        "database": "app",
        "password": "s@cret",
    }
    assert server.conninfo_kwargs()["dbname"] == "app"
    for action in (server.start, server.stop, server.restart, server.kill):
        with pytest.raises(UnsupportedOperation, match="cannot"):
            action()
    kv = ExternalServer("host=10.0.0.1 port=5433 user=bob dbname='my db'")
    assert (kv.host, kv.port, kv.user, kv.dbname, kv.password) == (
        "10.0.0.1", 5433, "bob", "my db", None,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Fault proxy
# --------------------------------------------------------------------------------------------


def test_proxy_passes_traffic_both_ways_and_counts_connections(
    pg: Server, fault_proxy: ProxyFactory
) -> None:
    proxy = fault_proxy(pg.host, pg.port)
    assert proxy.host == "127.0.0.1"
    assert proxy.port not in (0, pg.port)
    assert proxy.connection_count == 0

    async def scenario() -> None:
        conns = [await asyncpg.connect(**via(pg, proxy)) for _ in range(3)]
        proxy.wait_for_connections(3)
        big = await conns[0].fetchval("SELECT repeat('x', 3000000)")
        assert big == "x" * 3_000_000
        echoed = await conns[1].fetchval("SELECT length($1::text)", "y" * 2_000_000)
        assert echoed == 2_000_000
        await conns.pop().close()
        proxy.wait_for_connections(2)
        for conn in conns:
            await conn.close()

    asyncio.run(scenario())
    proxy.wait_for_connections(0)
    assert psycopg_select(dsn_via(pg, proxy)) == 1
    proxy.wait_for_connections(0)


def test_proxy_passes_on_a_server_side_disconnect(pg: Server, fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy(pg.host, pg.port)
    with psycopg.connect(dsn_via(pg, proxy), autocommit=True) as victim:
        pid = victim.info.backend_pid
        with psycopg.connect(pg.dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
    proxy.wait_for_connections(0)


def test_blackhole_makes_queries_hang_until_restored(pg: Server, fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy(pg.host, pg.port)

    async def scenario() -> None:
        conn = await asyncpg.connect(**via(pg, proxy))
        try:
            assert await conn.fetchval("SELECT 1") == 1
            proxy.blackhole()
            query = asyncio.ensure_future(conn.fetchval("SELECT 1"))
            done, _ = await asyncio.wait({query}, timeout=0.5)
            assert not done, "a query through a blackhole must not complete"
            # New connections are accepted but the handshake goes nowhere.
            with pytest.raises(asyncio.TimeoutError):
                await asyncpg.connect(**via(pg, proxy), timeout=0.5)
            assert proxy.connection_count >= 1

            proxy.pass_through()
            assert await select_1(**via(pg, proxy)) == 1
            # The old connection lost its query bytes: it is desynchronised and never answers.
            done, _ = await asyncio.wait({query}, timeout=0.2)
            assert not done
        finally:
            conn.terminate()
        with pytest.raises(ASYNCPG_CONNECTION_LOST):
            await query

    asyncio.run(scenario())


def test_blackhole_holds_back_a_close_until_restored(pg: Server, fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy(pg.host, pg.port)
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        proxy.wait_for_connections(1)
        proxy.blackhole()
        sock.shutdown(socket.SHUT_WR)  # the server would close in answer, if it saw the EOF
        time.sleep(0.2)
        assert proxy.connection_count == 1
        proxy.pass_through()
        assert sock.recv(1) == b""
    proxy.wait_for_connections(0)


def test_reset_all_breaks_open_connections_while_new_ones_work(
    pg: Server, fault_proxy: ProxyFactory
) -> None:
    proxy = fault_proxy(pg.host, pg.port)
    sync_conn = psycopg.connect(dsn_via(pg, proxy))

    async def scenario() -> None:
        conn = await asyncpg.connect(**via(pg, proxy))
        try:
            proxy.wait_for_connections(2)
            assert proxy.reset_all() == 2
            assert proxy.connection_count == 0
            with pytest.raises(ASYNCPG_CONNECTION_LOST):
                await conn.fetchval("SELECT 1")
            assert await select_1(**via(pg, proxy)) == 1
        finally:
            conn.terminate()

    try:
        asyncio.run(scenario())
        with pytest.raises(psycopg.OperationalError):
            sync_conn.execute("SELECT 1")
    finally:
        sync_conn.close()
    assert psycopg_select(dsn_via(pg, proxy)) == 1


def test_reset_all_sends_rst_not_fin(pg: Server, fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy(pg.host, pg.port)
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        proxy.wait_for_connections(1)
        proxy.reset_all()
        with pytest.raises(ConnectionResetError):
            sock.recv(1)


def test_stop_accepting_refuses_connections_fast_until_start_accepting(
    pg: Server, fault_proxy: ProxyFactory
) -> None:
    proxy = fault_proxy(pg.host, pg.port)
    port = proxy.port

    async def scenario() -> None:
        existing = await asyncpg.connect(**via(pg, proxy))
        try:
            proxy.stop_accepting()
            assert not proxy.accepting
            started = time.perf_counter()
            with pytest.raises(ConnectionRefusedError):
                await asyncpg.connect(**via(pg, proxy), timeout=5)
            assert time.perf_counter() - started < 1.0
            assert await existing.fetchval("SELECT 1") == 1, "open connections are unaffected"
        finally:
            await existing.close()

    asyncio.run(scenario())
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(dsn_via(pg, proxy), connect_timeout=5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=5).close()

    proxy.start_accepting()
    assert proxy.accepting
    assert proxy.port == port
    assert asyncio.run(select_1(**via(pg, proxy))) == 1
    assert psycopg_select(dsn_via(pg, proxy)) == 1


def test_delay_adds_measurable_latency(pg: Server, fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy(pg.host, pg.port)
    with psycopg.connect(dsn_via(pg, proxy), autocommit=True) as conn:

        def round_trip() -> float:
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            return time.perf_counter() - started

        baseline = statistics.median(round_trip() for _ in range(5))
        proxy.delay(0.1)
        delayed = statistics.median(round_trip() for _ in range(3))
        proxy.pass_through()
        restored = statistics.median(round_trip() for _ in range(5))
    print(f"\nround trip: {baseline * 1e3:.1f} ms, delayed {delayed * 1e3:.1f} ms")
    assert baseline < 0.05
    assert 0.19 <= delayed < 0.19 + 0.5  # 0.1 s each way
    assert restored < 0.05


def test_delay_is_latency_not_a_throughput_cap(pg: Server, fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy(pg.host, pg.port)
    proxy.delay(0.1)

    async def scenario() -> float:
        conn = await asyncpg.connect(**via(pg, proxy))
        try:
            started = time.perf_counter()
            # ~4 MB comes back in many chunks; each chunk is late, but they are not serialised.
            await conn.fetchval("SELECT repeat('x', 4000000)")
            return time.perf_counter() - started
        finally:
            await conn.close()

    elapsed = asyncio.run(scenario())
    assert elapsed < 1.5


def test_closed_proxy_refuses_control_and_close_is_idempotent(
    pg: Server, fault_proxy: ProxyFactory
) -> None:
    proxy = fault_proxy(pg.host, pg.port)
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    try:
        proxy.wait_for_connections(1)
        proxy.close()
        proxy.close()
        assert proxy.connection_count == 0
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
    finally:
        sock.close()
    with pytest.raises(RuntimeError, match="closed"):
        proxy.blackhole()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=5).close()
