"""A hand-driven fake shell for the sans-IO pool core.

No event loop, no threads, no database: time is whatever float the test
passes as ``now``, waiters are plain objects with a ``gone`` flag, and the IO
the core asks for (``core.pending``) is "carried out" by the helper methods
below when the test says so.
"""

from __future__ import annotations

import itertools
from typing import Any

from pgmarina._core import Entry, EntryState, PoolConfig, PoolCore
from pgmarina._core.entry import (  # noqa: F401 - re-exported for the core tests
    CHECKING,
    CLOSED,
    CLOSING,
    CONNECTING,
    IDLE,
    IN_USE,
    PINGING,
    RESETTING,
)

#: Settings that keep time-driven behaviour out of the way unless a test asks.
QUIET: dict[str, Any] = {
    "max_lifetime": None,
    "max_idle": None,
    "check_window": None,
    "keepalive": None,
    "fail_fast_after": None,
}


class Waiter:
    """A queued caller: ``gone`` once it gave up, ``entry`` once served,
    ``nudged`` while woken to come for an idle entry (barging)."""

    _ids = itertools.count(1)

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"w{next(self._ids)}"
        self.gone = False
        self.entry: Entry | None = None
        self.nudged = False
        self.since = 0.0
        self.error: BaseException | None = None  # set when refused

    def __repr__(self) -> str:
        return f"<Waiter {self.name}{' gone' if self.gone else ''}>"


class ConnectError(OSError):
    """What the fake driver raises when the "server" is down."""


class Shell:
    """Owns a :class:`PoolCore` and plays the shell's part step by step.

    ``connects``, ``closes`` and ``pings`` are the IO the core asked for and
    the test has not carried out yet; ``backoff`` maps a failed connect to the
    time its retry is due.  Every helper drains ``core.pending`` first, so a
    test may call core methods directly and then use the helpers.
    """

    def __init__(self, *, rand: float = 0.5, quiet: bool = True, **settings: Any) -> None:
        if quiet:
            settings = {**QUIET, **settings}
        self.config = PoolConfig(**settings)
        self.core: PoolCore[Waiter] = PoolCore(
            self.config, self.wake, refuse=self.refuse, rand=lambda: rand
        )
        self.connects: list[Entry] = []
        self.closes: list[Entry] = []
        self.pings: list[Entry] = []
        self.backoff: dict[Entry, float] = {}
        self.served: list[tuple[Waiter, Entry]] = []
        self._conn_ids = itertools.count(1)

    # -- the wake callable -------------------------------------------------

    def wake(self, waiter: Waiter, entry: Entry | None) -> bool:
        if waiter.gone:
            return False
        assert waiter.entry is None and not waiter.nudged, f"{waiter!r} woken twice"
        if entry is None:
            waiter.nudged = True
            return True
        assert entry.state is IN_USE, f"{entry!r} handed out while not leased"
        waiter.entry = entry
        self.served.append((waiter, entry))
        return True

    def refuse(self, waiter: Waiter, error: BaseException) -> bool:
        if waiter.gone:
            return False
        assert waiter.entry is None and waiter.error is None, f"{waiter!r} refused twice"
        waiter.error = error
        return True

    # -- carrying out pending work ------------------------------------------

    def drain(self) -> None:
        work, self.core.pending = self.core.pending, []
        for entry in work:
            if entry.state is CONNECTING:
                self.connects.append(entry)
            elif entry.state is CLOSING:
                self.closes.append(entry)
            elif entry.state is PINGING:
                self.pings.append(entry)
            else:  # pragma: no cover - a core bug
                raise AssertionError(f"unexpected pending entry {entry!r}")

    def in_flight(self) -> int:
        """Connects started and not finished (not counting backoff sleeps)."""
        self.drain()
        return len(self.connects)

    def succeed(self, now: float, n: int | None = None) -> list[Entry]:
        """Finish the ``n`` oldest connects in flight (all when ``None``)."""
        self.drain()
        n = len(self.connects) if n is None else n
        done, self.connects = self.connects[:n], self.connects[n:]
        for entry in done:
            self.core.connect_succeeded(entry, f"conn{next(self._conn_ids)}", now)
        self.drain()
        return done

    def succeed_all(self, now: float, *, limit: int = 1000) -> list[Entry]:
        """Finish connects until the core asks for no more."""
        done: list[Entry] = []
        while self.in_flight():
            done += self.succeed(now)
            limit -= 1
            assert limit > 0, "the core keeps asking for connects"
        return done

    def fail(
        self, now: float, error: BaseException | None = None, *, permanent: bool = False,
        configured: bool = True,
    ) -> float | None:
        """Fail the oldest connect in flight; returns the core's retry delay.

        ``permanent``: the server rejected it (wrong password and the like).
        ``configured=False``: it connected, and the ``configure`` hook raised.
        """
        self.drain()
        entry = self.connects.pop(0)
        delay = self.core.connect_failed(
            entry, error or ConnectError("refused"), now, permanent=permanent,
            configured=configured,
        )
        if delay is not None:
            self.backoff[entry] = now + delay
        self.drain()
        return delay

    def retry(self, now: float) -> list[Entry]:
        """Call ``retry_due`` for every failed connect whose delay is over."""
        retried = []
        for entry, due in list(self.backoff.items()):
            if due <= now:
                del self.backoff[entry]
                if self.core.retry_due(entry, now):
                    self.connects.append(entry)
                    retried.append(entry)
        self.drain()
        return retried

    def close_all(self) -> list[Entry]:
        """Finish closing every retired entry."""
        self.drain()
        done, self.closes = self.closes, []
        for entry in done:
            self.core.closed(entry)
        self.drain()
        return done

    def ping_all(self, now: float, ok: bool = True) -> list[Entry]:
        self.drain()
        done, self.pings = self.pings, []
        for entry in done:
            self.core.ping_done(entry, ok, now)
        self.drain()
        return done

    # -- borrower side ------------------------------------------------------

    def open(self, now: float = 0.0) -> None:
        self.core.open(now)
        self.drain()

    def fill(self, now: float = 0.0) -> list[Entry]:
        """Open the pool and let every connect succeed."""
        self.open(now)
        return self.succeed_all(now)

    def acquire(self, now: float, waiter: Waiter | None = None) -> Entry | Waiter:
        """``checkout``, else ``enqueue`` a waiter; returns the entry or the waiter."""
        entry = self.core.checkout(now)
        self.drain()
        if entry is not None:
            return entry
        waiter = waiter or Waiter()
        self.core.enqueue(waiter, now)
        waiter.since = now
        self.drain()
        return waiter

    def come(self, waiter: Waiter, now: float) -> Entry | None:
        """A nudged waiter comes for its idle entry (``checkout_nudged``)."""
        assert waiter.nudged, f"{waiter!r} was not nudged"
        waiter.nudged = False
        entry = self.core.checkout_nudged(waiter, waiter.since, now)
        self.drain()
        if entry is not None:
            waiter.entry = entry
            self.served.append((waiter, entry))
        return entry

    def take(self, now: float) -> Entry:
        """``checkout`` that must hand out a leased entry right away."""
        entry = self.core.checkout(now)
        self.drain()
        assert entry is not None, "expected an idle entry"
        assert entry.state is IN_USE
        return entry

    def checkin(self, entry: Entry, now: float) -> None:
        self.core.checkin(entry, now)
        self.drain()

    def lease_all(self, n: int, now: float = 0.0) -> list[Entry]:
        """Get ``n`` leased entries, opening connects for the ones missing."""
        waiters = []
        got: list[Entry] = []
        for _ in range(n):
            res = self.acquire(now)
            if isinstance(res, Waiter):
                waiters.append(res)
            else:
                got.append(res)
        while any(w.entry is None for w in waiters):
            assert self.succeed(now), "waiters left with nothing connecting"
        return got + [w.entry for w in waiters if w.entry is not None]


def states(core: PoolCore[Any]) -> dict[EntryState, int]:
    """How many known entries are in each state."""
    counts: dict[EntryState, int] = {}
    for entry in core.entries:
        counts[entry.state] = counts.get(entry.state, 0) + 1
    return counts
