"""Several hosts, on the shells' side: reading the hosts, and the role views.

A pool is given several servers either in its DSN, as libpq writes them
(``postgresql://u@h1:5432,h2:5433/db?target_session_attrs=any``, or
``host=h1,h2 port=5432,5433``), or with ``hosts=["h1:5432", ("h2", 5433)]``.
:func:`read_hosts` takes them out of the DSN: the pool, not the driver,
chooses the host of each connect, and hands the driver that one host (as
the ``host``/``port`` connect keywords, which every driver takes), so that
it knows which server, and which role, each connection has.  The decisions
themselves live in :mod:`pgmarina._core.hosts`.

:class:`~pgmarina.shells._common.RoleView` is what ``pool.reader`` and
``pool.writer`` return.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

from .._core.hosts import BALANCE, TARGETS

__all__ = ["HostsSpec", "read_hosts"]

HostsArg = Sequence["str | tuple[str, int | None]"]

_KV = re.compile(r"(\w+)\s*=\s*(\S+)")
# Words of a key=value DSN that name the servers, or how to choose among them.
_HOST_WORDS = ("host", "hostaddr", "port", "target_session_attrs", "load_balance_hosts")


class HostsSpec:
    """What :func:`read_hosts` found: the DSN left for the driver, and the hosts."""

    __slots__ = ("balance", "dsn", "hosts", "target")

    def __init__(
        self, dsn: str | None, hosts: list[tuple[str, int | None]], target: str, balance: bool
    ) -> None:
        self.dsn = dsn
        self.hosts = hosts
        self.target = target
        self.balance = balance


def _port(text: str, what: str) -> int | None:
    if text == "":
        return None
    try:
        port = int(text)
    except ValueError:
        # Not the text when it comes from a DSN: a password with a "/" or "@"
        # typed into a URL lands here as a "port".
        shown = "" if what == "dsn" else f", not {text!r}"
        raise ValueError(f"{what}: port must be a number{shown}") from None
    if not 0 < port < 65536:
        raise ValueError(f"{what}: port must be from 1 to 65535, not {port}")
    return port


def _split_host(text: str, what: str) -> tuple[str, int | None]:
    """``"h"``, ``"h:5432"``, ``"[::1]:5432"`` or a socket directory -> ``(host, port)``."""
    text = text.strip()
    if not text:
        raise ValueError(f"{what}: a host is empty")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, _port(rest.lstrip(":"), what)
    if text.startswith("/") or text.count(":") != 1:
        return text, None  # a Unix socket directory, or a bare IPv6 address
    host, _, port = text.partition(":")
    return host, _port(port, what)


def _hosts_arg(hosts: Any) -> list[tuple[str, int | None]]:
    if isinstance(hosts, (str, bytes)) or not isinstance(hosts, Sequence):
        raise TypeError(
            f"hosts must be a list of 'host:port' strings or (host, port) pairs, "
            f"not {type(hosts).__name__}"
        )
    if not hosts:
        raise ValueError("hosts must name at least one host")
    out: list[tuple[str, int | None]] = []
    for item in hosts:
        if isinstance(item, str):
            out.append(_split_host(item, "hosts"))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            port = item[1]
            if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
                raise TypeError(f"hosts: a port must be an int or None, not {port!r}")
            if not item[0]:
                raise ValueError("hosts: a host is empty")
            out.append((item[0], None if port is None else _port(str(port), "hosts")))
        else:
            raise TypeError(
                f"hosts: each host must be a 'host:port' string or a (host, port) pair, "
                f"not {item!r}"
            )
    return out


def _from_url(dsn: str) -> tuple[str, list[tuple[str, int | None]], dict[str, str]]:
    """Split a URL DSN into (the DSN without hosts and host settings, hosts, settings)."""
    scheme, _, rest = dsn.partition("://")
    netloc, slash, tail = rest.partition("/")
    if not slash:
        netloc, q, query0 = netloc.partition("?")
        tail = (q + query0) if q else ""
    user, at, hostspec = netloc.rpartition("@")
    path, q, query = tail.partition("?")
    params = parse_qsl(query, keep_blank_values=True)
    found = {k: v for k, v in params if k in _HOST_WORDS}
    kept = [(k, v) for k, v in params if k not in _HOST_WORDS]
    hosts = [_split_host(h, "dsn") for h in hostspec.split(",")] if hostspec else []
    if "host" in found:  # ?host=... as libpq allows
        hosts = [_split_host(h, "dsn") for h in found["host"].split(",")]
    if "port" in found:
        ports = [_port(p, "dsn") for p in found["port"].split(",")]
        hosts = [(h, ports[i] if i < len(ports) else ports[-1]) for i, (h, _) in enumerate(hosts)]
    bare = f"{scheme}://{user}{at}/{path}" + (f"?{urlencode(kept)}" if kept else "")
    return bare, hosts, found


def _from_kv(dsn: str) -> tuple[str, list[tuple[str, int | None]], dict[str, str]]:
    """The same for a ``key=value`` DSN (quoted values with spaces are not split)."""
    found: dict[str, str] = {}
    kept = []
    for key, value in _KV.findall(dsn):
        if key in _HOST_WORDS:
            found[key] = value.strip("'")
        else:
            kept.append(f"{key}={value}")
    names = found.get("host") or found.get("hostaddr") or ""
    ports = [_port(p, "dsn") for p in found.get("port", "").split(",")] if "port" in found else []
    hosts = []
    for i, name in enumerate(n for n in names.split(",") if n):
        port = ports[i] if i < len(ports) else (ports[-1] if ports else None)
        hosts.append((name, port))
    return " ".join(kept), hosts, found


def read_hosts(
    dsn: str | None,
    hosts: Any,
    target_session_attrs: Any,
    load_balance_hosts: Any,
    connect_kwargs: dict[str, Any],
) -> HostsSpec | None:
    """The pool's hosts, if it is to choose among them; ``None`` if it has one as before.

    The pool chooses when ``hosts`` is given, when the DSN names more than
    one host, or when ``target_session_attrs`` or ``load_balance_hosts`` is
    given as a pool setting.  Otherwise the DSN goes to the driver as it is.

    Raises:
        TypeError: ``hosts`` is not a list of hosts; ``host`` or ``port`` is
            also given as a connect keyword.
        ValueError: a bad port, no host, or an unknown ``target_session_attrs``
            or ``load_balance_hosts``; or the DSN and the setting disagree.
    """
    given = hosts is not None or target_session_attrs is not None or (
        load_balance_hosts is not None
    )
    found: dict[str, str] = {}
    listed: list[tuple[str, int | None]] = []
    bare = dsn
    if dsn:
        try:
            bare, listed, found = _from_url(dsn) if "://" in dsn else _from_kv(dsn)
        except ValueError:
            if not given:
                # Not ours to read: the driver's own check reports it, masked.
                return None
            raise
    if not given and len(listed) < 2:
        return None
    if hosts is not None:
        listed = _hosts_arg(hosts)
    if not listed:
        raise ValueError("hosts: no host given (pass hosts=[...] or name them in the dsn)")
    for key in ("host", "port", "hostaddr"):
        if key in connect_kwargs:
            raise TypeError(
                f"{key} is given as a connect keyword, but the pool chooses the host of "
                f"each connect: name the hosts in the dsn or with hosts=, not {key}="
            )
    target = _setting("target_session_attrs", target_session_attrs, found, TARGETS, "any")
    balance = _setting("load_balance_hosts", load_balance_hosts, found, BALANCE, "disable")
    return HostsSpec(bare or None, listed, target, balance == "random")


def _setting(name: str, value: Any, found: dict[str, str], allowed: Any, default: str) -> str:
    in_dsn = found.get(name)
    if value is None:
        value = in_dsn or default
    elif not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    elif in_dsn is not None and in_dsn != value:
        raise ValueError(f"{name} is {value!r} but the dsn says {in_dsn!r}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)
