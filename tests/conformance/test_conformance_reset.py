"""What a released connection looks like to its next borrower, for each ``reset=`` mode.

Every pool here has one connection, so the next borrower gets the very connection the last
one released (the tests check the backend pid to be sure).
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance_harness import Combo, eventually, run_async, unique

DEFAULT_SEARCH_PATH = '"$user", public'


async def _one_connection_pool(combo: Combo, pg: Any, **options: Any) -> Any:
    return await combo.make_pool(pg, min_size=1, max_size=1, **options)


@run_async
async def test_auto_reset_rolls_back_an_open_transaction_and_keeps_session_settings(
    combo: Combo, pg: Any
) -> None:
    pool = await _one_connection_pool(combo, pg)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await combo.run_committed(conn, "CREATE TEMP TABLE leftovers (x int)")
    await combo.run_committed(conn, "SET search_path TO nowhere, public")
    await combo.begin(conn)
    await combo.execute(conn, "INSERT INTO pg_temp.leftovers VALUES (1)")
    assert combo.in_transaction(conn)
    await combo.release(pool, conn)

    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) == pid
    assert not combo.in_transaction(conn)
    assert await combo.query_value(conn, "SELECT count(*) FROM pg_temp.leftovers") == 0
    # "auto" undoes the transaction only; the session is the borrower's business.
    assert await combo.query_value(conn, "SHOW search_path") == "nowhere, public"
    await combo.release(pool, conn)
    assert pool.stats().resets >= 1


@pytest.mark.parametrize("reset", ["auto", "full"])
@run_async
async def test_reset_rolls_back_a_failed_transaction(combo: Combo, pg: Any, reset: str) -> None:
    pool = await _one_connection_pool(combo, pg, reset=reset)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await combo.begin(conn)
    with pytest.raises(combo.driver_errors):
        await combo.execute(conn, "SELECT 1/0")
    assert combo.in_transaction(conn)
    await combo.release(pool, conn)

    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) == pid
    assert not combo.in_transaction(conn)
    assert await combo.query_value(conn, "SELECT 41 + 1") == 42
    await combo.release(pool, conn)


@run_async
async def test_full_reset_restores_session_settings(combo: Combo, pg: Any) -> None:
    pool = await _one_connection_pool(combo, pg, reset="full")
    app = combo.app_of(pool)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await combo.run_committed(conn, "SET application_name = 'dirty'")
    await combo.run_committed(conn, "SET search_path TO nowhere")
    await combo.begin(conn)
    await combo.release(pool, conn)

    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) == pid
    assert not combo.in_transaction(conn)
    assert await combo.query_value(conn, "SELECT current_setting('application_name')") == app
    assert await combo.query_value(conn, "SHOW search_path") == DEFAULT_SEARCH_PATH
    await combo.release(pool, conn)


@run_async
async def test_no_reset_leaves_session_settings_as_the_borrower_left_them(
    combo: Combo, pg: Any
) -> None:
    pool = await _one_connection_pool(combo, pg, reset=None)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await combo.run_committed(conn, "SET search_path TO nowhere")
    await combo.release(pool, conn)

    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) == pid
    assert await combo.query_value(conn, "SHOW search_path") == "nowhere"
    await combo.commit(conn)
    await combo.release(pool, conn)


@run_async
async def test_no_reset_never_hands_out_a_connection_inside_a_transaction(
    combo: Combo, pg: Any
) -> None:
    # With nothing to reset the transaction, the pool may not hand the connection on as it
    # is: it either cleans it or replaces it.
    pool = await _one_connection_pool(combo, pg, reset=None)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await combo.run_committed(conn, "CREATE TEMP TABLE leftovers (x int)")
    await combo.begin(conn)
    await combo.execute(conn, "INSERT INTO pg_temp.leftovers VALUES (1)")
    await combo.release(pool, conn)

    conn = await combo.acquire(pool)
    assert not combo.in_transaction(conn)
    if combo.backend_pid(conn) == pid:
        assert await combo.query_value(conn, "SELECT count(*) FROM pg_temp.leftovers") == 0
    else:
        assert await combo.query_value(conn, "SELECT to_regclass('pg_temp.leftovers')") is None
    await combo.release(pool, conn)


@run_async
async def test_a_custom_reset_runs_on_the_driver_connection_after_each_release(
    combo: Combo, pg: Any
) -> None:
    calls: list[Any] = []
    pool = await _one_connection_pool(combo, pg, reset=combo.hook(calls, "RESET search_path"))
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await combo.run_committed(conn, "SET search_path TO nowhere")
    await combo.begin(conn)
    await combo.release(pool, conn)
    await eventually(lambda: len(calls) == 1)
    assert isinstance(calls[0], combo.raw_connection_class)

    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) == pid
    assert not combo.in_transaction(conn)
    assert await combo.query_value(conn, "SHOW search_path") == DEFAULT_SEARCH_PATH
    await combo.release(pool, conn)
    await eventually(lambda: len(calls) == 2)


@run_async
async def test_a_custom_reset_that_fails_gets_the_connection_replaced(
    combo: Combo, pg: Any
) -> None:
    calls: list[Any] = []
    pool = await _one_connection_pool(combo, pg, reset=combo.hook(calls, "SELECT 1/0"))
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await combo.release(pool, conn)
    await eventually(lambda: len(calls) == 1)
    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) != pid
    assert await combo.query_value(conn, "SELECT 1") == 1
    await combo.release(pool, conn)


@run_async
async def test_connection_block_commits_on_success_and_rolls_back_on_error(
    transactional_combo: Combo, pg: Any
) -> None:
    combo = transactional_combo
    admin = await combo.admin(pg)
    table = unique("tx")
    await admin.execute(f"CREATE TABLE {table} (x int)")
    try:
        pool = await _one_connection_pool(combo, pg)
        async with combo.connection(pool) as conn:
            await combo.execute(conn, f"INSERT INTO {table} VALUES (1)")
            assert combo.in_transaction(conn)
        assert await admin.fetchval(f"SELECT array_agg(x) FROM {table}") == [1]

        with pytest.raises(ZeroDivisionError):
            async with combo.connection(pool) as conn:
                await combo.execute(conn, f"INSERT INTO {table} VALUES (2)")
                raise ZeroDivisionError
        assert await admin.fetchval(f"SELECT array_agg(x) FROM {table}") == [1]

        with pytest.raises(combo.driver_errors):
            async with combo.connection(pool) as conn:
                await combo.execute(conn, f"INSERT INTO {table} VALUES (3)")
                await combo.execute(conn, "SELECT 1/0")
        assert await admin.fetchval(f"SELECT array_agg(x) FROM {table}") == [1]

        async with combo.connection(pool) as conn:
            assert not combo.in_transaction(conn)
            assert await combo.query_value(conn, f"SELECT count(*) FROM {table}") == 1
        assert pool.stats().in_use == 0
    finally:
        await admin.execute(f"DROP TABLE {table}")


@run_async
async def test_a_commit_that_fails_at_the_end_of_a_block_raises_and_leaves_the_pool_clean(
    transactional_combo: Combo, pg: Any
) -> None:
    combo = transactional_combo
    admin = await combo.admin(pg)
    table = unique("deferred")
    await admin.execute(f"CREATE TABLE {table} (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    try:
        pool = await _one_connection_pool(combo, pg)
        with pytest.raises(combo.driver_errors, match="duplicate key"):
            async with combo.connection(pool) as conn:
                pid = combo.backend_pid(conn)
                await combo.execute(conn, f"INSERT INTO {table} VALUES (1), (1)")
        assert pool.stats().in_use == 0
        async with combo.connection(pool) as conn:
            assert combo.backend_pid(conn) == pid
            assert not combo.in_transaction(conn)
            assert await combo.query_value(conn, f"SELECT count(*) FROM {table}") == 0
    finally:
        await admin.execute(f"DROP TABLE {table}")
