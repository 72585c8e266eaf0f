"""Leak detection: who took the connection that never came back.

When ``leak_timeout`` is set, every lease records where it was acquired: the
code objects and line numbers of its caller's frames, not the frames
themselves (they would keep the caller's locals alive), and not formatted
text (formatting costs far more than the walk, and most leases come back).
The core decides which leases are overdue (:meth:`PoolCore.overdue`);
housekeeping then turns each into a :class:`LeakInfo`, logs one WARNING and
calls ``on_leak``.  With leak detection off, nothing here runs: the pool
keeps its plain lease maker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import linecache
import os
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any

from ._redact import redact

__all__ = ["LeakInfo", "live_pools", "register", "snapshot", "traced"]

#: Frames from these files down are not the acquirer's: the pool's own
#: machinery (not its CLI, whose demo leaks on purpose), and the machinery
#: under every task and worker thread.
_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_OWN = (
    *(_HERE + part for part in ("shells" + os.sep, "adapters" + os.sep, "_core" + os.sep,
                                "compat" + os.sep, "_lease.py", "_observe.py")),
    *(
        os.path.dirname(os.path.abspath(m.__file__)) + os.sep
        for m in (asyncio, concurrent.futures)
        if m.__file__ is not None
    ),
    threading.__file__,
)
#: Frames kept per lease, innermost first: enough to see past a framework.
_DEPTH = 32

Frames = tuple[tuple[CodeType, int], ...]


def _capture() -> Frames:
    """The calling code's frames, innermost first (sorted out when reported).

    Each as its code and the offset of its current instruction: reading
    ``f_lineno`` means a search of the line table, which costs more than the
    rest of the walk, so the line is found only for a lease that is reported.
    """
    frame: Any = sys._getframe(2)
    frames: list[tuple[CodeType, int]] = []
    append = frames.append
    for _ in range(_DEPTH):
        if frame is None:
            break
        append((frame.f_code, frame.f_lasti))
        frame = frame.f_back
    return tuple(frames)


def _line(code: CodeType, offset: int) -> int:
    """The source line of the instruction at ``offset`` in ``code``."""
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return line
    return code.co_firstlineno


def traced(make: Callable[[Any, Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    """A lease maker like ``make`` that also notes, on the entry, who acquired it."""

    def make_traced(con: Any, entry: Any, pool: Any) -> Any:
        entry.lease = _capture()
        return make(con, entry, pool)

    return make_traced


@dataclass(frozen=True, slots=True)
class LeakInfo:
    """A lease held longer than ``leak_timeout``: what ``on_leak`` receives.

    Attributes:
        pool: The pool's name.
        connection: The connection's number in the pool (as in its logs).
        age: How long the lease has been held, in seconds.
        leak_timeout: The pool's setting it overran.
        frames: Where it was acquired: ``(filename, line, function)``,
            outermost first, as in a traceback; the acquirer is the last.
    """

    pool: str
    connection: int
    age: float
    leak_timeout: float
    frames: tuple[tuple[str, int, str], ...]

    @property
    def stack(self) -> str:
        """``frames`` formatted as a traceback's lines (passwords masked)."""
        lines = []
        for filename, lineno, name in self.frames:
            lines.append(f'  File "{filename}", line {lineno}, in {name}\n')
            source = linecache.getline(filename, lineno).strip()
            if source:
                lines.append(f"    {source}\n")
        return redact("".join(lines))

    @property
    def acquirer(self) -> str:
        """``"file:line in function"`` of the code that acquired the lease."""
        if not self.frames:
            return "an unknown place"
        filename, lineno, name = self.frames[-1]
        return f"{filename}:{lineno} in {name}"

    def message(self) -> str:
        """The WARNING the pool logs for it."""
        return (
            f"{self.pool}: connection #{self.connection} has been leased for "
            f"{self.age:.1f}s (leak_timeout={self.leak_timeout:g}s) and not released; "
            f"a leak? It was acquired at {self.acquirer}:\n{self.stack}"
        ).rstrip("\n")


def leak_info(pool: str, entry: Any, now: float, leak_timeout: float) -> LeakInfo:
    """Describe ``entry``'s overdue lease (read it while the entry cannot change)."""
    frames = entry.lease if isinstance(entry.lease, tuple) else ()
    return LeakInfo(
        pool=pool,
        connection=entry.id,
        age=now - entry.acquired_at,
        leak_timeout=leak_timeout,
        frames=tuple(
            (code.co_filename, _line(code, offset), code.co_name)
            for code, offset in reversed(frames)
            if not code.co_filename.startswith(_OWN)
        ),
    )


# ----------------------------------------------------------------------
# Every pool of the process, for exporters (Prometheus, OpenTelemetry)

#: Held weakly: an exporter must not keep a forgotten pool alive.
_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()


def register(pool: Any) -> None:
    """Note ``pool`` as live (every pool's constructor calls this)."""
    _POOLS.add(pool)


def live_pools() -> list[Any]:
    """Every pool of the process that is neither collected nor closed, by name."""
    return sorted((p for p in list(_POOLS) if not p.closed), key=lambda p: p.name)


def snapshot(pool: Any) -> Any:
    """``pool.stats()``, from any thread.

    Exporters read stats from a thread of their own (an HTTP handler, a
    periodic reader).  An ``AsyncPool`` changes its books on its event loop
    without a lock, so its count of entries can change while another thread
    walks them: try again, the count is right the next time.
    """
    for _ in range(4):
        try:
            return pool.stats()
        except RuntimeError:  # "set changed size during iteration"
            continue
    return pool.stats()
