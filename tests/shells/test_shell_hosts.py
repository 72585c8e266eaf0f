"""Several hosts in the shells' arguments: multi-host DSNs, ``hosts=``, libpq's
``target_session_attrs``/``load_balance_hosts``, and ``pool.reader``/``pool.writer``.

Nothing connects here; the real servers are in tests/integration/test_several_hosts.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from pgmarina import AsyncPool, Pool, PoolError
from pgmarina.shells._hosts import read_hosts

SHELLS = [(AsyncPool, "asyncpg"), (AsyncPool, "psycopg"), (Pool, "psycopg"), (Pool, "psycopg2")]
IDS = [f"{cls.__name__}-{driver}" for cls, driver in SHELLS]


def test_a_multi_host_url_gives_each_host_and_a_dsn_without_them() -> None:
    spec = read_hosts(
        "postgresql://u:pw@h1:5432,h2:5433/db?target_session_attrs=read-write"
        "&load_balance_hosts=random&sslmode=disable",
        None, None, None, {},
    )  # fmt: skip
    assert spec is not None
    assert spec.hosts == [("h1", 5432), ("h2", 5433)]
    assert (spec.target, spec.balance) == ("read-write", True)
    assert spec.dsn == "postgresql://u:pw@/db?sslmode=disable"


def test_a_key_value_dsn_with_several_hosts_pairs_each_with_its_port() -> None:
    spec = read_hosts("host=a,b,c port=1,2 dbname=x", None, None, None, {})
    assert spec is not None
    assert spec.hosts == [("a", 1), ("b", 2), ("c", 2)]
    assert spec.dsn == "dbname=x"


def test_a_single_host_dsn_is_left_to_the_driver_as_it_is() -> None:
    assert read_hosts("postgresql://u@h1:5432/db", None, None, None, {}) is None
    assert read_hosts(None, None, None, None, {"host": "h"}) is None


def test_the_hosts_argument_takes_strings_and_pairs_and_ipv6_in_brackets() -> None:
    spec = read_hosts("dbname=x", ["a:1", ("b", 2), "[::1]:3", "/tmp/sock", "c"], None, None, {})
    assert spec is not None
    assert spec.hosts == [("a", 1), ("b", 2), ("::1", 3), ("/tmp/sock", None), ("c", None)]
    assert spec.target == "any" and not spec.balance


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"hosts": "a,b"}, TypeError, "hosts must be a list"),
        ({"hosts": []}, ValueError, "hosts must name at least one host"),
        ({"hosts": [("a", "1")]}, TypeError, "hosts: a port must be an int"),
        ({"hosts": ["a:x"]}, ValueError, "hosts: port must be a number"),
        ({"hosts": ["a:70000"]}, ValueError, "hosts: port must be from 1 to 65535"),
        ({"hosts": [42]}, TypeError, "hosts: each host must be"),
        ({"target_session_attrs": "master"}, ValueError, "target_session_attrs must be one of"),
        ({"target_session_attrs": 1}, TypeError, "target_session_attrs must be a str"),
        ({"load_balance_hosts": "round-robin"}, ValueError, "load_balance_hosts must be one of"),
    ],
)
def test_wrong_host_arguments_are_refused_naming_the_argument(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    options = {"hosts": ["a", "b"], **kwargs}
    with pytest.raises(error, match=words):
        Pool("dbname=x", driver="psycopg", **options)


def test_a_setting_that_disagrees_with_the_dsn_is_refused() -> None:
    with pytest.raises(ValueError, match="target_session_attrs is 'any' but the dsn says"):
        Pool(
            "postgresql://u@a,b/db?target_session_attrs=primary", driver="psycopg",
            target_session_attrs="any",
        )  # fmt: skip


def test_host_as_a_connect_keyword_is_refused_when_the_pool_chooses_hosts() -> None:
    with pytest.raises(TypeError, match="host is given as a connect keyword"):
        Pool("dbname=x", driver="psycopg", hosts=["a", "b"], host="c")


@pytest.mark.parametrize(("cls", "driver"), SHELLS, ids=IDS)
def test_repr_names_every_host_and_no_password(cls: Any, driver: str) -> None:
    pool = cls("postgresql://u:s3cret@h1:5432,h2:5433/db", driver=driver)
    assert "h1:5432,h2:5433/db" in repr(pool)
    assert "s3cret" not in repr(pool)
    assert [h.host for h in pool.stats().hosts] == ["h1:5432", "h2:5433"]


@pytest.mark.parametrize(("cls", "driver"), SHELLS, ids=IDS)
def test_reader_and_writer_views_are_bound_to_their_role(cls: Any, driver: str) -> None:
    pool = cls("postgresql://u@h1,h2/db", driver=driver)
    assert pool.writer.role == "read-write" and pool.reader.role == "read-only"
    assert pool.writer is pool.writer


@pytest.mark.parametrize(("cls", "driver"), SHELLS, ids=IDS)
def test_a_one_host_pool_refuses_the_role_views_saying_how_to_get_them(
    cls: Any, driver: str
) -> None:
    pool = cls("postgresql://u@h1/db", driver=driver)
    with pytest.raises(PoolError, match="hosts="):
        pool.writer  # noqa: B018
    assert pool.stats().hosts == ()


@pytest.mark.parametrize("given", [{}, {"target_session_attrs": "any"}])
def test_a_password_read_as_a_port_is_never_shown(given: dict[str, str]) -> None:
    """A "/" typed into a URL's password makes what follows the ":" look like a port; the
    host parser's error quoted it, password and all."""
    dsn = "postgresql://someone:S3cr3t/x@127.0.0.1:1/db"
    if not given:  # not the pool's to read: the driver's own (masked) check will report it
        assert read_hosts(dsn, None, None, None, {}) is None
        return
    with pytest.raises(ValueError, match="port must be a number") as info:
        read_hosts(dsn, None, given["target_session_attrs"], None, {})
    assert "S3cr3t" not in str(info.value)
