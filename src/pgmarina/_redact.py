"""Keep secrets out of everything the pool prints.

Connection strings and driver errors can carry passwords.  Anything the pool
shows (``repr``, log lines, error messages) goes through :func:`redact` or is
built by :func:`describe_target`, which never includes a password at all.
A driver's complaint about the connect arguments themselves goes through
:func:`scrub`, which blanks out whatever it quotes from them.

Driver messages also span lines: libpq puts its hints on lines of their own
and psycopg2 keeps libpq's trailing newline.  Text built from them goes
through :func:`describe_error` or :func:`one_line`, so that a log record or
an error message stays one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["describe_error", "describe_target", "one_line", "redact", "scrub"]

_URI_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.I)
_KV_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact(text: str) -> str:
    """Blank out passwords in URIs (``user:secret@``) and ``password=…`` pairs."""
    text = _URI_PASSWORD.sub(r"\g<scheme>:***@", text)
    return _KV_PASSWORD.sub(r"\g<key>***", text)


# A "word" of a connection string: what lies between its separators.
_WORD = re.compile(r"[^\s:/@?&=,;'\"\[\]%\\()]+")

# libpq's connection parameters: names, never secrets, and worth showing in
# "invalid connection option" or "missing '=' after" complaints.
_KEYWORDS = frozenset(
    {
        "application_name", "channel_binding", "client_encoding", "connect_timeout", "dbname",
        "fallback_application_name", "gssdelegation", "gssencmode", "gsslib", "host", "hostaddr",
        "keepalives", "keepalives_count", "keepalives_idle", "keepalives_interval", "krbsrvname",
        "load_balance_hosts", "max_protocol_version", "min_protocol_version", "options", "passfile",
        "password", "port", "replication", "require_auth", "requirepeer", "service",
        "ssl_max_protocol_version", "ssl_min_protocol_version", "sslcert", "sslcertmode",
        "sslcompression", "sslcrl", "sslcrldir", "sslkey", "sslmode", "sslnegotiation",
        "sslpassword", "sslrootcert", "sslsni", "target_session_attrs", "tcp_user_timeout", "user",
    }
)


def scrub(text: str, dsn: str | None, kwargs: Mapping[str, Any]) -> str:
    """``text``, a driver's complaint about ``dsn``/``kwargs``, with their values blanked.

    libpq quotes the piece of a connection string it cannot parse, and with
    a space or an ``@`` typed into a password that piece *is* the password
    (``missing "=" after "S3cr3t"``), where no ``password=`` shows it.  So
    every word of the text that is, or overlaps (three characters or more),
    a word of the DSN (as written or percent-decoded) or of a keyword's
    value becomes ``***``.  Parameter names stay: libpq's own, and the
    keywords the caller passed.
    """
    sources = [dsn or "", unquote(dsn or "")]
    sources += [str(v) for v in kwargs.values() if isinstance(v, (str, int, float))]
    words = {w for source in sources for w in _WORD.findall(source)}
    keep = _KEYWORDS | {str(k) for k in kwargs}

    def mask(match: re.Match[str]) -> str:
        word = match.group()
        if word in keep:
            return word
        for w in words:
            if word == w or (len(word) >= 3 and word in w) or (len(w) >= 3 and w in word):
                return "***"
        return word

    return redact(_WORD.sub(mask, text))
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
