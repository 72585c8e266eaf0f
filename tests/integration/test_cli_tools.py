"""``pgmarina check`` and ``pgmarina bench`` (issue 15), run as subprocesses against the test bed.

Every DSN given to ``check`` carries a password the servers here never ask for (trust
authentication), so the tests can assert that it is printed nowhere.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pgmarina
from pgmarina.cli.bench import CONTENDERS, installed
from pgmarina.cli.check import split_hosts

SECRET = "Zq9-not-a-real-pw"


def _env() -> dict[str, str]:
    src = str(Path(pgmarina.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}


def _pgmarina(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgmarina", *args],
        capture_output=True, text=True, env=_env(), timeout=timeout, check=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uri(server: Any, host: str | None = None, port: int | None = None) -> str:
    hosts = host or f"{server.host}:{server.port if port is None else port}"
    return f"postgresql://{server.user}:{SECRET}@{hosts}/{server.dbname}"


# ---------------------------------------------------------------------------------------------
# --help


@pytest.mark.parametrize("command", ["bench", "check"])
def test_every_new_command_explains_itself_and_each_option(command: str) -> None:
    done = _pgmarina(command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: pgmarina {command}")
    options = done.stdout.split("options:", 1)[1]
    lines = [line for line in options.splitlines() if line.lstrip().startswith("-")]
    assert len(lines) >= 3 and any("--json" in line for line in lines)
    for line in lines:  # COLUMNS=200: each option and its help text share a line
        assert re.match(r"^\s+-\S.*?\s{2,}\S", line), f"no help text: {line!r}"


# ---------------------------------------------------------------------------------------------
# check


def test_split_hosts_reads_uris_and_key_value_dsns_with_one_or_many_ports() -> None:
    hosts, params = split_hosts("postgresql://u:pw@h1:5432,[::1]:5433/db?target_session_attrs=any")
    assert hosts == [("h1", "5432"), ("::1", "5433")]
    assert params == {"user": "u", "password": "pw", "dbname": "db"}
    assert split_hosts("host=a,b port=6000 dbname=x")[0] == [("a", "6000"), ("b", "6000")]
    with pytest.raises(ValueError, match="3 ports for 2 hosts"):
        split_hosts("host=a,b port=1,2,3")


def test_check_reports_a_primary_and_exits_zero(pg: Any) -> None:
    done = _pgmarina("check", _uri(pg))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"{pg.user}@{pg.host}:{pg.port}/{pg.dbname}" in out
    assert "primary" in out and "none detected" in out
    assert "read-write pool: yes" in out
    assert SECRET not in out + done.stderr


def test_check_tells_each_host_of_a_multi_host_dsn_apart(pg: Any) -> None:
    dead = _free_port()
    done = _pgmarina("check", "--json", _uri(pg, host=f"127.0.0.1:{dead},{pg.host}:{pg.port}"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr
    report = json.loads(done.stdout)
    first, second = report["hosts"]
    assert (first["reachable"], first["read_write"]) == (False, False)
    assert "Connection refused" in first["error"]
    assert second["reachable"] and second["read_write"] and second["role"] == "primary"
    assert second["max_connections"] >= second["connections_used"] >= 1
    assert second["tls"] is False and second["pooler"] is None
    assert report["read_write"] is True


def test_check_exits_nonzero_when_no_host_is_reachable(pg: Any) -> None:
    done = _pgmarina("check", _uri(pg, port=_free_port()))
    assert done.returncode == 1
    assert "read-write pool: NO" in done.stdout and "Connection refused" in done.stdout
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.private_cluster
def test_check_exits_nonzero_for_a_server_whose_sessions_are_read_only(
    make_private_pg: Any,
) -> None:
    server = make_private_pg({"default_transaction_read_only": "on"})
    done = _pgmarina("check", _uri(server))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "primary (read-only sessions)" in done.stdout
    assert "sessions are read-only" in done.stdout


def test_check_refuses_a_dsn_it_cannot_read_without_printing_its_password() -> None:
    done = _pgmarina("check", f"host=h password='{SECRET}")  # an unterminated quote
    assert done.returncode == 2
    assert "pgmarina check: dsn:" in done.stderr
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "dsn",
    [
        f"host=127.0.0.1 port=1 password={SECRET} dbname=postgres",
        f"host=127.0.0.1 port=1 password='ab {SECRET}' dbname=postgres",
        f"host=127.0.0.1 port=1 password=ab {SECRET} dbname=postgres",  # a space typed in
        f"postgresql://postgres:{SECRET} x@127.0.0.1:1/postgres",
        f"postgresql://postgres@127.0.0.1:1/postgres?password={SECRET}",
        f"postgresql://postgres:{SECRET}@127.0.0.1:notaport/postgres",
    ],
    ids=["kv", "kv-quoted", "kv-space-typo", "uri-space", "uri-query", "uri-bad-port"],
)
def test_check_prints_no_password_whatever_the_dsn_looks_like(dsn: str) -> None:
    done = _pgmarina("check", dsn)
    assert done.returncode in (1, 2)
    assert done.stdout + done.stderr  # it said something
    assert SECRET not in done.stdout + done.stderr


@pytest.fixture
def session_bouncer(pg: Any, make_pgbouncer: Callable[..., Any]) -> int:
    """A PgBouncer in session mode in front of ``pg``, with its admin console open to the
    test's user (where ``SHOW VERSION`` answers); its port."""
    port: int = make_pgbouncer(pg, pool_mode="session", admin=True).port
    return port


def test_check_names_pgbouncer_in_front_of_the_server(pg: Any, session_bouncer: int) -> None:
    done = _pgmarina("check", "--json", _uri(pg, host=f"127.0.0.1:{session_bouncer}"))
    assert done.returncode == 0, done.stdout + done.stderr
    [host] = json.loads(done.stdout)["hosts"]
    assert host["pooler"].startswith("PgBouncer 1."), host["pooler"]
    assert "confirmed by SHOW VERSION" in host["pooler"]
    assert "is not the server's" in host["pooler"]  # the clue it found
    assert host["role"] == "primary" and host["read_write"]
    assert SECRET not in done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------
# bench


@pytest.mark.slow
def test_bench_runs_every_installed_contender_and_writes_json_and_a_plot(
    pg: Any, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "bench.png"
    done = _pgmarina("bench", "--dsn", pg.dsn, "--conc", "2", "--rounds", "1",
                     "--seconds", "0.2", "--size", "2", "--json", "--plot", str(plot),
                     timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {r["contender"]: r for r in report["results"]}
    assert set(rows) == {c.name for c in CONTENDERS if installed(c)}
    assert {"pgmarina", "asyncpg-pool", "psycopg_pool"} <= set(rows)
    for row in rows.values():
        assert row["conc"] == 2 and row["ops_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
    assert rows["pgmarina"]["ratio"] == 1.0
    assert rows["asyncpg-pool"]["baseline"] == "pgmarina"
    assert rows["psycopg_pool"]["baseline"] == "pgmarina-psycopg"
    assert rows["raw-asyncpg"]["tasks"] == 2  # --size tasks, whatever --conc is
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.private_cluster
def test_bench_starts_an_embedded_server_by_default_and_prints_a_table() -> None:
    done = _pgmarina("bench", "--only", "pgmarina,asyncpg-pool", "--conc", "3",
                     "--rounds", "2", "--seconds", "0.1", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 contenders on a throwaway embedded PostgreSQL" in done.stderr
    lines = [line for line in done.stdout.splitlines() if "asyncpg-pool" in line]
    assert len(lines) == 1 and "x pgmarina [" in lines[0]
    assert "p99 ms" in done.stdout


def test_bench_takes_a_key_value_dsn_and_prints_no_password(pg: Any) -> None:
    """asyncpg and the other URI-only contenders get the DSN as a URI."""
    dsn = (f"host={pg.host} port={pg.port} user={pg.user} dbname={pg.dbname} "
           f"password='{SECRET}'")
    done = _pgmarina("bench", "--dsn", dsn, "--only", "pgmarina,pgmarina-psycopg",
                     "--conc", "1", "--rounds", "1", "--seconds", "0.1", "--json")
    assert done.returncode == 0, done.stderr
    assert f"on postgresql://{pg.user}:***@{pg.host}:{pg.port}/{pg.dbname}" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert {r["contender"] for r in json.loads(done.stdout)["results"]} == {
        "pgmarina", "pgmarina-psycopg"
    }


def test_bench_refuses_an_unknown_contender_naming_the_known_ones() -> None:
    done = _pgmarina("bench", "--only", "pgbouncer")
    assert done.returncode == 2
    assert "--only: unknown contender(s) pgbouncer" in done.stderr
    assert "psycopg_pool" in done.stderr
