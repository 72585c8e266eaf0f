"""Keep secrets out of everything the pool prints.

Connection strings and driver errors can carry passwords.  Anything the pool
shows (``repr``, log lines, error messages) goes through :func:`redact` or is
built by :func:`describe_target`, which never includes a password at all.

Driver messages also span lines: libpq puts its hints on lines of their own
and psycopg2 keeps libpq's trailing newline.  Text built from them goes
through :func:`describe_error` or :func:`one_line`, so that a log record or
an error message stays one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["describe_error", "describe_target", "one_line", "redact"]

_URI_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.I)
_KV_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact(text: str) -> str:
    """Blank out passwords in URIs (``user:secret@``) and ``password=…`` pairs."""
    text = _URI_PASSWORD.sub(r"\g<scheme>:***@", text)
    return _KV_PASSWORD.sub(r"\g<key>***", text)


def one_line(text: str) -> str:
    """``text`` redacted, with every run of whitespace (newlines too) made one space."""
    return redact(" ".join(text.split()))


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of a (driver) error on one line, passwords blanked."""
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_target(dsn: str | None, kwargs: Mapping[str, Any]) -> str:
    """``host:port/dbname`` for ``repr`` and logs, from a DSN and/or keywords."""
    host: Any = kwargs.get("host")
    port: Any = kwargs.get("port")
    db: Any = kwargs.get("database") or kwargs.get("dbname")
    if dsn:
        if "://" in dsn:
            try:
                parts = urlsplit(dsn)
                host = host or parts.hostname
                port = port or parts.port
                db = db or (parts.path.lstrip("/") or None)
            except ValueError:
                pass
        else:
            pairs = dict(re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn))
            host = host or pairs.get("host")
            port = port or pairs.get("port")
            db = db or pairs.get("dbname")
    text = str(host or "localhost")
    if port:
        text += f":{port}"
    if db:
        text += f"/{db}"
    return redact(text)
