"""The PgBouncer test bed (``bouncerbed``) runs a real PgBouncer in transaction pooling mode:
the PgBouncer tests mean what they say only if it does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from bouncerbed import Bouncer


def test_the_bouncer_hands_one_server_session_to_every_client_in_turn(
    pg: Any, make_pgbouncer: Callable[..., Bouncer]
) -> None:
    """With one server connection, a setting one client leaves in its session is what the
    next client finds: transaction pooling (in session pooling the second client would
    wait for the first to disconnect)."""
    bouncer = make_pgbouncer(pg, server_pool_size=1)
    with psycopg.connect(bouncer.dsn, autocommit=True) as a, psycopg.connect(
        bouncer.dsn, autocommit=True
    ) as b:
        a.execute("SELECT set_config('pgmarina.probe', 'left by a', false)")
        got = b.execute("SELECT current_setting('pgmarina.probe', true)").fetchone()
        assert got == ("left by a",)
        b.execute("RESET pgmarina.probe")


def test_the_bouncer_listens_on_loopback_in_front_of_the_server(
    pg: Any, pgbouncer: Bouncer
) -> None:
    assert pgbouncer.host == "127.0.0.1" and pgbouncer.port != pg.port
    with psycopg.connect(pgbouncer.dsn, autocommit=True) as conn:
        assert conn.info.port == pgbouncer.port
        assert conn.execute("SELECT current_user").fetchone() == (pg.user,)
