"""What a newcomer reads first: the constructors' signatures and the messages (Day one issue).

Item 2: ``AsyncPool(dsn, *, driver, **kwargs)`` hid every setting, so ``help()`` and IDEs
showed none; now each setting is in both signatures, typed, with the default
:class:`~pgmarina._core.PoolConfig` gives it, and a misspelt one is named.  Item 6:
driver errors kept libpq's newlines (psycopg2 its trailing one), so "; retrying in …" landed
on a line of its own; every log line and message built from a driver error is one line.
The connect-error tests use real drivers against a port where nothing listens.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import inspect
import logging
import pydoc
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from pgmarina import AsyncPool, Pool, PoolConnectError
from pgmarina._core import PoolConfig
from pgmarina.shells.threaded import BARGE_WINDOW

README = Path(__file__).resolve().parents[2] / "README.md"

PAIRS = [
    pytest.param(AsyncPool, "asyncpg", id="asyncpg-AsyncPool"),
    pytest.param(AsyncPool, "psycopg", id="psycopg-AsyncPool"),
    pytest.param(Pool, "psycopg", id="psycopg-Pool"),
    pytest.param(Pool, "psycopg2", id="psycopg2-Pool"),
]

#: The constructor arguments that are not PoolConfig fields, with their defaults.
SHELL_ONLY = {
    "driver": None,
    "connect_timeout": 10.0,
    "reset_timeout": 5.0,
    "reset": "auto",
    "configure": None,
    "check": None,
    "reconnect_failed": None,
    "on_leak": None,
    # several hosts (issue 13)
    "hosts": None,
    "target_session_attrs": None,
    "load_balance_hosts": None,
    "connect_kwargs": None,
    "name": None,
}

#: Settings whose default in a shell is its own, not PoolConfig's.
OWN_DEFAULTS: dict[type, dict[str, Any]] = {Pool: {"barge_window": BARGE_WINDOW}}

DSN = "postgresql://app@127.0.0.1:1/app"  # never connected to in the signature tests


# ---------------------------------------------------------------------------------------------
# signatures


@pytest.mark.parametrize("cls", [AsyncPool, Pool])
def test_every_pool_setting_shows_in_the_signature_with_the_default_it_gets(cls: type) -> None:
    """Regression: the shells' ``__init__(dsn, *, driver, **kwargs)`` showed no setting.

    The default shown is the config's, or the shell's own where it has one, and it
    is the one a pool made without that keyword really gets.
    """
    params = inspect.signature(cls).parameters
    made = cls(DSN)._config
    for field in dataclasses.fields(PoolConfig):
        assert field.name in params, field.name
        param = params[field.name]
        assert param.kind is param.KEYWORD_ONLY, field.name
        assert param.annotation is not param.empty, field.name
        # max_size's None stands for max(min_size, 10): 10 is the config's default.
        expected = None if field.name == "max_size" else field.default
        expected = OWN_DEFAULTS.get(cls, {}).get(field.name, expected)
        assert param.default == expected, field.name
        assert type(param.default) is type(expected), field.name
        got = getattr(made, field.name)
        assert got == (10 if field.name == "max_size" else expected), field.name


@pytest.mark.parametrize("cls", [AsyncPool, Pool])
def test_every_shell_argument_shows_in_the_signature_with_its_default(cls: type) -> None:
    params = inspect.signature(cls).parameters
    for name, default in SHELL_ONLY.items():
        assert name in params, name
        assert params[name].default == default, name
        assert params[name].annotation is not params[name].empty, name
    rest = [p for p in params.values() if p.kind is p.VAR_KEYWORD]
    assert [p.name for p in rest] == ["driver_kwargs"]
    expected = {"dsn", "driver_kwargs"} | SHELL_ONLY.keys() | PoolConfig.names()
    assert set(params) == expected
    text = pydoc.render_doc(cls)
    for name in ("max_lifetime", "check_window", "fail_fast_after", "connect_kwargs"):
        assert f"{name}:" in text


def test_each_shell_defaults_to_its_own_driver() -> None:
    assert AsyncPool(DSN).driver == "asyncpg"
    assert Pool(DSN).driver == "psycopg"


@pytest.mark.parametrize(("cls", "driver"), PAIRS)
def test_a_misspelt_setting_fails_at_once_naming_it_and_the_setting_meant(
    cls: type, driver: str
) -> None:
    """Regression: ``max_sise=5`` went to the driver, whose refusal spoke of an unknown
    connection option (with libpq's trailing newline) and never of ``max_size``."""
    with pytest.raises(TypeError) as info:
        cls(DSN, driver=driver, max_sise=5)
    message = str(info.value)
    assert "'max_sise'" in message
    assert "did you mean 'max_size'?" in message
    assert "\n" not in message


@pytest.mark.parametrize(("cls", "driver"), PAIRS)
def test_a_keyword_no_one_takes_is_refused_on_one_line_naming_it(cls: type, driver: str) -> None:
    """Regression: libpq's refusal kept its trailing newline (psycopg, psycopg2)."""
    with pytest.raises(TypeError) as info:
        cls(DSN, driver=driver, frobnicate=1)
    message = str(info.value)
    assert "frobnicate" in message
    assert "\n" not in message


@pytest.mark.parametrize(("cls", "driver"), PAIRS)
def test_plain_keywords_and_connect_kwargs_both_reach_the_driver(cls: type, driver: str) -> None:
    """The older spelling (driver keywords among the settings) is still accepted."""
    key, value = (
        ("server_settings", {"application_name": "x"})
        if driver == "asyncpg"
        else ("application_name", "x")
    )
    plain = cls(DSN, driver=driver, **{key: value})
    mapped = cls(DSN, driver=driver, connect_kwargs={key: value})
    assert plain._connect_kwargs == mapped._connect_kwargs == {key: value}
    with pytest.raises(TypeError, match=f"given twice: {key}"):
        cls(DSN, driver=driver, connect_kwargs={key: value}, **{key: value})


def _readme_table(cls: type) -> dict[str, str]:
    """Parameter -> default, as the README's table gives it for ``cls``.

    A default cell holds one literal, or one per shell, each followed by the
    shell's name in parentheses.
    """
    section = README.read_text().split("## Parameters", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*) \|", section, re.M)
    assert rows, "no parameter table in README.md"
    table = {}
    for name, cell in rows:
        per_shell = {shell: value for value, shell in re.findall(r"`([^`]*)` \(`(\w+)`\)", cell)}
        if per_shell:
            table[name] = per_shell[cls.__name__]
        else:
            literal = re.fullmatch(r"`([^`]*)`", cell.strip())
            assert literal, f"{name}: {cell!r}"
            table[name] = literal.group(1)
    return table


@pytest.mark.parametrize("cls", [AsyncPool, Pool])
def test_the_readme_parameter_table_shows_the_real_defaults(cls: type) -> None:
    params = inspect.signature(cls).parameters
    table = _readme_table(cls)
    for name in ("min_size", "max_size", "timeout", "max_lifetime", "max_idle", "check_window",
                 "fail_fast_after", "reset", "barge_window", "connect_timeout", "driver"):
        assert name in table, name
    for name, default in table.items():
        assert name in params, name
        assert ast.literal_eval(default) == params[name].default, name


# ---------------------------------------------------------------------------------------------
# driver errors on one line


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _open_and_fail(pool: Any, is_async: bool) -> BaseException:
    try:
        if is_async:
            await pool.open(wait=True, timeout=10)
        else:
            await asyncio.to_thread(pool.open, wait=True, timeout=10)
    except Exception as exc:
        return exc
    raise AssertionError("open(wait=True) succeeded on a port where nothing listens")


@pytest.mark.parametrize(("cls", "driver"), PAIRS)
def test_a_connect_error_is_logged_and_raised_on_one_line(
    cls: type, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: libpq's "Connection refused" comes with its hint on a second line and
    psycopg2's with a trailing newline, so "; retrying in …" landed on a line of its own and
    the fail-fast error spanned lines."""
    pool = cls(f"postgresql://app@127.0.0.1:{_dead_port()}/app", driver=driver,
               fail_fast_after=0.3, connect_timeout=5, name="oneline")
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="pgmarina"):
        exc = asyncio.run(_open_and_fail(pool, cls is AsyncPool))
    assert time.monotonic() - start < 8
    assert isinstance(exc, PoolConnectError), repr(exc)
    assert "\n" not in str(exc)
    lines = [r.getMessage() for r in caplog.records if "connect failed" in r.getMessage()]
    assert lines, "no connect failure was logged"
    assert any("retrying in" in line for line in lines)
    for line in lines:
        assert "\n" not in line, line
        assert line.rstrip() == line, line
