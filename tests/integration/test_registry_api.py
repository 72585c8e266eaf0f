"""The pool registry's API on a real server: keys, secrets, idle pools, the cap."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from pgmarina import AsyncPool, Pool, PoolClosed, PoolTimeout
from pgmarina.registry import AsyncPoolRegistry, PoolRegistry, dsn_key

SECRET = "s3cr3t-Pw"


def _with_password(pg: Any) -> str:
    # The test server trusts local connections: the password goes unused,
    # which is all these tests need of it.
    return f"postgresql://{pg.user}:{SECRET}@{pg.host}:{pg.port}/{pg.dbname}"


# -- keys -------------------------------------------------------------------------------


def test_one_database_spelt_as_a_url_or_as_keywords_has_one_key() -> None:
    url = "postgresql://alice:pw@DB.example:5433/app?sslmode=disable&application_name=x"
    kw = (
        "application_name=x host=db.example port=5433 dbname=app user=alice password='pw' "
        "sslmode = disable"
    )
    assert dsn_key(url) == dsn_key(kw)


def test_keys_differ_by_database_options_and_password_and_never_contain_the_secret() -> None:
    base = dsn_key("postgresql://u:one@h/db")
    assert base != dsn_key("postgresql://u:one@h/other")
    assert base != dsn_key("postgresql://u:one@h/db", {"max_size": 3})
    assert base != dsn_key("postgresql://u:two@h/db")
    assert "one" not in base and len(base) == 32
    assert dsn_key("postgresql://u:one@h/db", {"max_size": 3}) == dsn_key(
        "postgresql://u:one@h/db", {"max_size": 3}
    )


def test_dsn_key_refuses_what_is_not_a_dsn() -> None:
    with pytest.raises(TypeError, match="dsn"):
        dsn_key(b"postgresql://h/db")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dsn"):
        dsn_key("just words")


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"max_total": 0}, ValueError, "max_total"),
        ({"max_total": "5"}, TypeError, "max_total"),
        ({"idle_ttl": -1}, ValueError, "idle_ttl"),
        ({"idle_ttl": "1"}, TypeError, "idle_ttl"),
    ],
)
def test_bad_registry_settings_are_refused_naming_the_argument(
    kwargs: dict[str, Any], error: type[Exception], word: str
) -> None:
    with pytest.raises(error, match=word):
        PoolRegistry(**kwargs)


# -- thread registry ----------------------------------------------------------------------


def test_a_registry_hands_out_one_open_pool_per_dsn_and_options(pg: Any) -> None:
    with PoolRegistry(min_size=0, max_size=2, driver="psycopg") as registry:
        a = registry.pool(pg.dsn)
        assert isinstance(a, Pool)
        assert registry.pool(pg.dsn) is a
        b = registry.pool(pg.dsn, max_size=1)
        assert b is not a and b.max_size == 1
        with a.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert len(registry) == 2
    assert a.closed and b.closed
    with pytest.raises(PoolClosed):
        registry.pool(pg.dsn)


def test_no_secret_in_a_registrys_keys_pool_names_repr_or_stats(pg: Any) -> None:
    with PoolRegistry(max_total=4, min_size=1, driver="psycopg") as registry:
        with registry.connection(_with_password(pg)) as conn:
            conn.execute("SELECT 1")
        pool = registry.pool(_with_password(pg))
        texts = [repr(registry), repr(pool), pool.name, repr(registry.stats()), *registry.keys()]
        assert all(SECRET not in t for t in texts), texts


def test_a_pool_idle_for_idle_ttl_is_closed_and_made_again_on_next_use(pg: Any) -> None:
    with PoolRegistry(idle_ttl=0.2, min_size=1, driver="psycopg") as registry:
        first = registry.pool(pg.dsn)
        deadline = time.monotonic() + 5
        while len(registry) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.closed and registry.stats().pools_collected == 1
        with registry.connection(pg.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert registry.pool(pg.dsn) is not first


def test_a_pool_with_a_lease_out_is_not_collected_however_long_the_lease(pg: Any) -> None:
    with PoolRegistry(idle_ttl=0.1, min_size=0, driver="psycopg") as registry:
        pool = registry.pool(pg.dsn)
        with pool.connection() as conn:
            time.sleep(0.5)
            conn.execute("SELECT 1")
        assert not pool.closed and registry.stats().pools_collected == 0


def test_under_a_full_budget_a_pool_reclaims_another_pools_idle_connection_below_min_size(
    pg: Any,
) -> None:
    with PoolRegistry(max_total=1, min_size=1, driver="psycopg") as registry:
        a = registry.pool(pg.dsn, application_name="a")
        a.wait(5)
        assert a.stats().idle == 1
        b = registry.pool(pg.dsn, application_name="b")
        with b.connection(timeout=5) as conn:
            assert conn.execute("SELECT current_setting('application_name')").fetchone() == (
                "b",
            )
            assert a.stats().size == 0  # a gave up its only connection
            assert registry.stats().budget_used == 1
        assert registry.stats().reclaims >= 1


def test_with_every_permit_leased_a_caller_waits_up_to_its_timeout(pg: Any) -> None:
    with PoolRegistry(max_total=1, min_size=0, driver="psycopg") as registry:
        a = registry.pool(pg.dsn, application_name="a")
        b = registry.pool(pg.dsn, application_name="b")
        with a.connection():
            t0 = time.monotonic()
            with pytest.raises(PoolTimeout), b.connection(timeout=0.3):
                pass
            assert time.monotonic() - t0 >= 0.25
        assert registry.stats().budget_used == 1


def test_a_waiter_gets_the_connection_another_pool_released_within_a_fraction_of_a_second(
    pg: Any,
) -> None:
    with PoolRegistry(max_total=1, min_size=0, driver="psycopg") as registry:
        a = registry.pool(pg.dsn, application_name="a")
        b = registry.pool(pg.dsn, application_name="b")
        served_at: list[float] = []

        def use_b() -> None:
            with b.connection(timeout=5) as conn:
                served_at.append(time.monotonic())
                conn.execute("SELECT 1")

        with a.connection():
            t = threading.Thread(target=use_b)
            t.start()
            time.sleep(0.2)
            assert served_at == []  # b waits: the one permit is leased in a
            released = time.monotonic()
        t.join(6)
        assert served_at and served_at[0] - released < 0.5
        assert registry.stats().budget_used == 1


def test_the_default_registry_is_one_per_process() -> None:
    assert PoolRegistry.default() is PoolRegistry.default()
    assert AsyncPoolRegistry.default() is AsyncPoolRegistry.default()


# -- async registry -----------------------------------------------------------------------


def test_async_registry_hands_out_open_pools_and_closes_them_all(pg: Any) -> None:
    async def main() -> None:
        registry = AsyncPoolRegistry(max_total=3, min_size=0, driver="asyncpg")
        a = await registry.pool(pg.dsn)
        assert isinstance(a, AsyncPool) and await registry.pool(pg.dsn) is a
        async with registry.connection(pg.dsn, max_size=2) as conn:
            assert await conn.fetchval("SELECT 1") == 1
        stats = registry.stats()
        assert len(stats.pools) == 2 and stats.size >= 1 and stats.max_total == 3
        assert SECRET not in repr(registry)
        await registry.close()
        assert a.closed and registry.closed
        with pytest.raises(PoolClosed):
            await registry.pool(pg.dsn)

    asyncio.run(main())


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_thread_registry_caps_and_reclaims_on_each_thread_driver(pg: Any, driver: str) -> None:
    with PoolRegistry(max_total=1, min_size=1, driver=driver) as registry:
        a = registry.pool(pg.dsn, application_name="a")
        a.wait(5)
        b = registry.pool(pg.dsn, application_name="b")
        for pool in (b, a, b):
            with pool.connection(timeout=5) as conn:
                cur = conn.cursor()
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
            assert registry.stats().budget_used <= 1
        assert registry.stats().reclaims >= 2


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
def test_async_registry_caps_and_reclaims_on_each_async_driver(pg: Any, driver: str) -> None:
    async def main() -> None:
        async with AsyncPoolRegistry(max_total=1, min_size=1, driver=driver) as registry:
            a = await registry.pool(pg.dsn, name="a")
            await a.wait(5)
            b = await registry.pool(pg.dsn, name="b")
            for pool in (b, a, b):
                async with pool.connection(timeout=5) as conn:
                    if driver == "asyncpg":
                        assert await conn.fetchval("SELECT 1") == 1
                    else:
                        cur = await conn.execute("SELECT 1")
                        assert await cur.fetchone() == (1,)
                assert registry.stats().budget_used <= 1
            assert registry.stats().reclaims >= 2

    asyncio.run(main())


# -- dedicated connections ----------------------------------------------------------------


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_a_listeners_dedicated_connection_counts_against_max_total(pg: Any, driver: str) -> None:
    """The listener connects outside the pool's slots; under a registry it must still take
    a permit, or max_total would be exceeded by one connection per listening pool."""
    with PoolRegistry(max_total=1, min_size=0, driver=driver) as registry:
        pool = registry.pool(pg.dsn)
        pool.listen("pgm_budget", lambda note: None, timeout=5)
        assert pool.stats().dedicated == 1
        assert registry.stats().budget_used == 1
        with pytest.raises(PoolTimeout), pool.connection(timeout=0.3):
            pass  # the only permit is the listener's
        assert pool.stats().size == 0
    assert registry.stats().budget_used == 0


def test_an_async_listener_waits_for_a_permit_and_gives_it_back(pg: Any) -> None:
    async def main() -> None:
        async with AsyncPoolRegistry(max_total=1, min_size=0) as registry:
            pool = await registry.pool(pg.dsn)
            async with pool.connection():
                # The one permit is leased: the listener cannot connect meanwhile.
                with pytest.raises(PoolTimeout):
                    await pool.listen("pgm_budget", lambda note: None, timeout=0.3)
                assert pool.stats().dedicated == 0
            # The lease is back and idle; the listener needs its own permit, so the idle
            # connection must go first (an idle connection is not reclaimed for it).  A pool
            # its user closed is made anew by the next lookup.
            await pool.close()
            assert registry.stats().budget_used == 0
            closed, pool = pool, await registry.pool(pg.dsn)
            assert pool is not closed and not pool.closed
            await pool.listen("pgm_budget", lambda note: None, timeout=5)
            assert pool.stats().dedicated == 1 and registry.stats().budget_used == 1
        assert registry.stats().budget_used == 0

    asyncio.run(main())


def test_a_listener_takes_the_permit_of_a_connection_idle_in_another_pool(pg: Any) -> None:
    """Idle connections (held for up to max_idle) used to keep every permit from a listener,
    whose listen() then timed out although nobody was using the server."""
    with PoolRegistry(max_total=2, min_size=1, driver="psycopg") as registry:
        acme = registry.pool(pg.dsn, application_name="acme")
        globex = registry.pool(pg.dsn, application_name="globex")
        assert registry.stats().budget_used == 2  # both idle, at min_size
        t0 = time.monotonic()
        acme.listen("pgm_room", lambda note: None, timeout=5)
        assert time.monotonic() - t0 < 3
        assert acme.stats().dedicated == 1
        assert registry.stats().budget_used == 2
        assert acme.stats().size + globex.stats().size == 1
