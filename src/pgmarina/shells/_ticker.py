"""The clock behind every AsyncPool's housekeeping: one daemon thread.

A timer armed on an event loop costs every turn of that loop, not just the
one it fires in: while one is pending, asyncio works out how long it may
sleep and looks at its timer heap on each turn (measured: about 700
instructions a turn, 1 % of a SQLAlchemy async checkout at one task).  A
housekeeping timer is always pending, so AsyncPool keeps none on its loop.
This thread keeps the time instead and, when a pool's interval has passed,
hands the tick to the pool's loop with ``call_soon_threadsafe``; the tick
runs there, on the loop, as any callback does.  (The thread only sleeps and
posts: no pool state is touched off the loop.)

One thread serves every pool of the process, on any number of loops.  A
tick is posted again only after the last one ran, so a busy loop never
finds a pile of them; and the next one is due an interval after that.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any

__all__ = ["Tick", "every"]


class Tick:
    """One pool's housekeeping clock; :meth:`cancel` stops it."""

    __slots__ = ("callback", "cancelled", "interval", "loop")

    def __init__(self, loop: Any, callback: Callable[[], bool], interval: float) -> None:
        self.loop = loop
        #: Runs on ``loop``; returns ``False`` when its pool is gone: no more ticks.
        self.callback = callback
        self.interval = interval
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def _run(self) -> None:  # on the loop; the clock arms it again only from here
        if self.cancelled:
            return
        if not self.callback():
            self.cancelled = True
            return
        _clock.arm(self, monotonic() + self.interval)


class _Clock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._due: list[tuple[float, int, Tick]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, tick: Tick, when: float) -> None:
        with self._cond:
            heapq.heappush(self._due, (when, next(self._order), tick))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pgmarina housekeeping clock", daemon=True
                )
                self._thread.start()
            elif self._due[0][2] is tick:
                self._cond.notify()

    def _run(self) -> None:
        due = self._due
        while True:
            with self._cond:
                while True:
                    while due and due[0][2].cancelled:
                        heapq.heappop(due)
                    if not due:
                        self._cond.wait()
                        continue
                    wait = due[0][0] - monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                tick = heapq.heappop(due)[2]
            try:
                tick.loop.call_soon_threadsafe(tick._run)
            except RuntimeError:  # its loop is closed: the pool is done with
                tick.cancelled = True

    def after_fork(self) -> None:
        # The thread stayed in the parent, and so did the loops it served.
        self._cond = threading.Condition(threading.Lock())
        self._due = []
        self._thread = None


_clock = _Clock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_clock.after_fork)


def every(loop: Any, interval: float, callback: Callable[[], bool]) -> Tick:
    """Run ``callback`` on ``loop`` every ``interval`` seconds, from an
    interval from now, for as long as it returns ``True``."""
    tick = Tick(loop, callback, interval)
    _clock.arm(tick, monotonic() + interval)
    return tick
