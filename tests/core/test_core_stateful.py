"""A randomised shell drives the core; its books must balance after every step."""

from __future__ import annotations

from typing import Any

from coresim import (
    CHECKING,
    CLOSED,
    CLOSING,
    CONNECTING,
    IDLE,
    IN_USE,
    PINGING,
    RESETTING,
    ConnectError,
    Shell,
    Waiter,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pgmarina._core import Entry, PoolCore
from pgmarina.errors import PoolClosed, PoolConnectError, TooManyWaiters

INDEX = st.integers(min_value=0, max_value=10**6)
GAPS = st.sampled_from([0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 25.0])


class PoolMachine(RuleBasedStateMachine):
    """Borrowers, waiters, a flaky server and a clock, all under test control."""

    def __init__(self) -> None:
        super().__init__()
        self.sh: Shell
        self.now = 0.0
        self.steps = 0
        self.held: dict[Entry, object] = {}  # leased entry -> its holder
        self.checking: list[Entry] = []  # handed out CHECKING, check not reported
        self.resetting: list[Entry] = []  # released, reset under way
        self.waiting: list[Waiter] = []  # queued by us, neither served nor gone
        self.leases = 0  # leases the model saw, to compare with ``acquires``
        self.opened = self.failed = self.closed = 0
        self.prev_connecting = 0
        self.cap = 0  # size when the last resize shrank max_size below it
        self.zombies: list[Entry] = []  # taken by terminate(), borrower not told

    # -- setup ---------------------------------------------------------------

    @initialize(
        min_size=st.integers(0, 3),
        extra=st.integers(0, 3),
        max_connecting=st.integers(1, 3),
        max_waiting=st.sampled_from([0, 0, 2, 4]),
        max_uses=st.sampled_from([0, 0, 3]),
        max_lifetime=st.sampled_from([None, 20.0, 60.0]),
        check_window=st.sampled_from([None, 1.0, 5.0]),
        keepalive=st.sampled_from([None, 3.0, 10.0]),
        max_idle=st.sampled_from([None, 5.0, 30.0]),
        fail_fast_after=st.sampled_from([None, 2.0, 10.0]),
        barge_window=st.sampled_from([0.0, 0.0, 1.0, 5.0]),
        idle_order=st.sampled_from(["lifo", "fifo"]),
        rand=st.sampled_from([0.0, 0.5, 0.99]),
    )
    def setup(self, min_size: int, extra: int, rand: float, **settings: Any) -> None:
        self.sh = Shell(
            rand=rand,
            quiet=False,
            min_size=min_size,
            max_size=max(1, min_size + extra),
            backoff_initial=0.05,
            backoff_max=2.0,
            **settings,
        )
        self.sh.open(self.now)

    # -- helpers -------------------------------------------------------------

    @property
    def core(self) -> PoolCore[Waiter]:
        return self.sh.core

    def _lease(self, entry: Entry, holder: object) -> None:
        assert entry not in self.held, f"{entry!r} handed to a second holder"
        assert entry not in self.checking and entry not in self.resetting
        assert entry not in self.core.idle
        assert entry.state is IN_USE
        self.held[entry] = holder
        self.leases += 1

    def _settle(self) -> None:
        """Record what the core did during the last call."""
        self.sh.drain()
        served, self.sh.served = self.sh.served, []
        for waiter, entry in served:
            assert waiter in self.waiting, f"{waiter!r} served but not live and waiting"
            self.waiting.remove(waiter)
            self._lease(entry, waiter)
        for waiter in [w for w in self.waiting if w.error is not None]:
            assert isinstance(waiter.error, PoolConnectError)  # refused: the server rejects us
            assert waiter not in self.core.waiters
            self.waiting.remove(waiter)

    @staticmethod
    def _pick(items: list[Any], i: int) -> Any:
        return items[i % len(items)]

    # -- borrowers -----------------------------------------------------------

    @precondition(lambda self: len(self.held) + len(self.waiting) + len(self.checking) < 8)
    @rule()
    def acquire(self) -> None:
        entry = self.core.checkout(self.now)
        self._settle()
        if entry is not None:
            if entry.state is CHECKING:
                assert entry not in self.checking
                self.checking.append(entry)
            else:
                self._lease(entry, object())
            return
        waiter = Waiter()
        waiter.since = self.now
        try:
            self.core.enqueue(waiter, self.now)
        except (TooManyWaiters, PoolConnectError, PoolClosed):
            self._settle()
            return
        self.waiting.append(waiter)
        self._settle()

    @precondition(lambda self: self.held)
    @rule(i=INDEX, how=st.sampled_from(["checkin", "checkin", "reset", "discard"]))
    def release(self, i: int, how: str) -> None:
        entry = self._pick(list(self.held), i)
        del self.held[entry]
        if how == "checkin":
            self.core.checkin(entry, self.now)
        elif how == "reset":
            self.core.begin_reset(entry)
            self.resetting.append(entry)
        else:
            self.core.discard(entry, self.now)
        self._settle()

    @precondition(lambda self: self.checking or self.resetting)
    @rule(i=INDEX, ok=st.booleans())
    def borrower_reports(self, i: int, ok: bool) -> None:
        """A checkout check or a reset round trip ends."""
        entry = self._pick(self.checking + self.resetting, i)
        if entry in self.checking:
            self.checking.remove(entry)
            if self.core.check_done(entry, ok, self.now):
                self._lease(entry, object())
        else:
            self.resetting.remove(entry)
            if ok:
                self.core.checkin(entry, self.now)
            else:
                self.core.discard(entry, self.now, lost=False)
        self._settle()

    @precondition(lambda self: self.waiting)
    @rule(i=INDEX, tell_core=st.booleans())
    def give_up(self, i: int, tell_core: bool) -> None:
        """A waiter times out or is cancelled; the core may not know yet."""
        waiter = self._pick(self.waiting, i)
        self.waiting.remove(waiter)
        waiter.gone = True
        # A nudged waiter always says it leaves: the nudge must go on.
        if tell_core or waiter.nudged:
            self.core.forget_waiter(waiter, timed_out=True, nudged=waiter.nudged)
        self._settle()

    @precondition(lambda self: any(w.nudged for w in self.waiting))
    @rule(i=INDEX)
    def nudged_waiter_comes(self, i: int) -> None:
        """A waiter woken to take an idle entry (barging) comes for it."""
        waiter = self._pick([w for w in self.waiting if w.nudged], i)
        waiter.nudged = False
        try:
            entry = self.core.checkout_nudged(waiter, waiter.since, self.now)
        except PoolClosed:
            self.waiting.remove(waiter)
            self._settle()
            return
        if entry is not None:
            self.waiting.remove(waiter)
            if entry.state is CHECKING:
                self.checking.append(entry)
            else:
                self._lease(entry, waiter)
        else:
            assert self.core.waiters[0] is waiter
        self._settle()

    # -- the shell's IO --------------------------------------------------------

    @precondition(lambda self: self.sh.connects or self.sh.closes or self.sh.pings)
    @rule(i=INDEX, outcome=st.sampled_from(["ok", "ok", "ok", "fail", "rejected"]))
    def io_finishes(self, i: int, outcome: str) -> None:
        """A connect, close or ping the core asked for ends."""
        sh = self.sh
        entry = self._pick(sh.connects + sh.closes + sh.pings, i)
        ok = outcome == "ok"
        if entry in sh.connects:
            sh.connects.remove(entry)
            if ok:
                self.opened += 1
                self.core.connect_succeeded(entry, object(), self.now)
            else:
                self.failed += 1
                delay = self.core.connect_failed(
                    entry, ConnectError(outcome), self.now, permanent=outcome == "rejected"
                )
                if delay is None:
                    assert entry.state is CLOSED
                else:
                    assert 0 < delay <= 2.0
                    assert entry.state is CONNECTING
                    sh.backoff[entry] = self.now + delay
        elif entry in sh.closes:
            sh.closes.remove(entry)
            self.closed += 1
            self.core.closed(entry)
        else:
            sh.pings.remove(entry)
            self.core.ping_done(entry, ok, self.now)
        self._settle()

    # -- time and administration ------------------------------------------------

    @rule(
        gap=GAPS,
        tick=st.booleans(),
        admin=st.sampled_from([None] * 12 + ["expire", "check_idle", "resize"]),
        new_min=st.integers(0, 3),
        new_extra=st.integers(0, 3),
    )
    def time_passes(
        self, gap: float, tick: bool, admin: str | None, new_min: int, new_extra: int
    ) -> None:
        """The clock moves; due retries go ahead; maybe housekeeping or admin runs."""
        self.now += gap
        self.sh.retry(self.now)
        self._settle()
        if tick:
            self.core.housekeeping(self.now)
            self.core.reconnect_failed_due(self.now)
            self._settle()
        if admin == "expire":
            self.core.expire(self.now)
        elif admin == "check_idle":
            taken = self.core.check_idle(self.now)
            assert all(e.state is PINGING for e in taken)
            self.sh.pings += taken
        elif admin == "resize":
            self.cap = max(self.cap, self.core.size)
            self.core.resize(new_min, max(1, new_min + new_extra), self.now)
        self._settle()

    @precondition(lambda self: self.steps > 30 and not self.sh.core.closing)
    @rule(terminate=st.booleans())
    def close(self, terminate: bool) -> None:
        core = self.core
        size = core.size
        if terminate:
            returned = core.close(self.now)
            taken = core.terminate(self.now)
            for entry in taken:
                if entry in self.held:
                    del self.held[entry]
                    self.zombies.append(entry)
                elif entry in self.resetting:
                    self.resetting.remove(entry)
                    self.zombies.append(entry)
                elif entry in self.checking:
                    # Its borrower's check_done is left out here (see the
                    # dedicated terminate test); the shell just closes it.
                    self.checking.remove(entry)
                else:
                    assert entry in self.sh.pings
                    self.sh.pings.remove(entry)
                    self.zombies.append(entry)
                assert entry.state is CLOSING
                self.sh.closes.append(entry)
            assert core.drained
        else:
            returned = core.close(self.now)
        assert core.size <= size
        for waiter in returned:
            if waiter in self.waiting:
                self.waiting.remove(waiter)
            else:
                assert waiter.gone
        self._settle()

    @precondition(lambda self: self.zombies)
    @rule(i=INDEX, how=st.sampled_from(["checkin", "discard", "ping_done"]))
    def late_report_after_terminate(self, i: int, how: str) -> None:
        """A borrower or a ping reports on an entry terminate() took: ignored."""
        entry = self._pick(self.zombies, i)
        self.zombies.remove(entry)
        before = self.core.stats()
        state = entry.state
        if how == "checkin":
            self.core.checkin(entry, self.now)
        elif how == "discard":
            self.core.discard(entry, self.now)
        else:
            self.core.ping_done(entry, True, self.now)
        assert entry.state is state
        assert self.core.stats() == before
        assert self.core.pending == []

    # -- invariants --------------------------------------------------------------

    @invariant()
    def books_balance(self) -> None:
        core = self.core
        sh = self.sh
        self.steps += 1
        assert core.pending == [], "the model drains pending after every call"
        idle = core.idle

        # The idle stack: no duplicates, only IDLE entries, none of them held.
        assert len(set(idle)) == len(idle)
        for entry in idle:
            assert entry.state is IDLE
            assert entry in core.entries
            assert entry not in self.held
            assert entry not in self.checking and entry not in self.resetting
        for entry in self.held:
            assert entry.state is IN_USE
        for entry in self.checking:
            assert entry.state is CHECKING
        for entry in self.resetting:
            assert entry.state is RESETTING

        # Every live entry is in exactly one place the model knows about.
        places: list[Entry] = [
            *idle,
            *self.held,
            *self.checking,
            *self.resetting,
            *sh.connects,
            *sh.backoff,
            *sh.closes,
            *sh.pings,
        ]
        assert len(places) == len(set(places)), "an entry is in two places at once"
        assert set(places) == core.entries
        for entry in sh.connects + list(sh.backoff):
            assert entry.state is CONNECTING
        for entry in sh.closes:
            assert entry.state is CLOSING
        for entry in sh.pings:
            assert entry.state is PINGING

        # The incremental counts agree with the entries.
        alive = [e for e in core.entries if e.state not in (CLOSING, CLOSED)]
        assert core.size == len(alive)
        # Never past max_size; after a resize down, never growing while above it.
        assert core.size <= max(core.config.max_size, self.cap)
        self.cap = core.size if core.size > core.config.max_size else 0
        assert core.connecting == sum(e.state is CONNECTING for e in core.entries)

        # Nobody waits while a connection sits idle, unless a waiter was
        # nudged to come and take it (barging).
        nudged = [w for w in self.waiting if w.nudged]
        if idle:
            assert not core.waiters or nudged
        for waiter in self.waiting:
            assert waiter.entry is None
            assert (waiter in core.waiters) != (waiter.nudged or core.closing)
        if core.closing:
            assert not core.waiters

        # A live waiter is never stranded: something is on its way back.
        if not core.closing and any(not w.gone for w in core.waiters):
            busy = len(self.held) + len(self.checking) + len(self.resetting) + len(sh.pings)
            assert core.connecting > 0 or busy > 0 or nudged, "live waiters with nothing coming"

        # Below min_size, a connect is always under way (or waiting to retry).
        if not core.closing and core.size < core.config.min_size:
            assert core.connecting > 0, "below min_size with nothing connecting"

        # While the server rejects the pool, one probe keeps trying, asked for or not.
        if core.rejection is not None and not core.closing:
            assert core.connecting > 0, "rejected with no probe left to pick up a fix"

        # No connect storm while failing.
        if core.failing_since is not None:
            assert core.connecting <= max(self.prev_connecting, 1)
        self.prev_connecting = core.connecting

        # Stats agree with the model.
        stats = core.stats()
        assert stats.size == core.size
        assert stats.idle == len(idle)
        assert stats.in_use == len(self.held) + len(self.checking) + len(self.resetting)
        assert stats.waiting == len(core.waiters) + len(nudged)
        assert stats.connecting == core.connecting
        assert stats.acquires == self.leases
        assert stats.connections_opened == self.opened
        assert stats.connections_failed == self.failed
        assert stats.connections_closed == self.closed
        assert core.drained == (
            not self.held and not self.checking and not self.resetting and not sh.pings
        )


PoolMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestThePoolCoreKeepsItsBooksBalancedUnderRandomUse = PoolMachine.TestCase
