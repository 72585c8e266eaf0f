"""The connection budget shared by pools in a registry, on the sans-IO core.

No loop, no threads, no database: several fake shells (``coresim.Shell``)
join one :class:`Budget`; the pokes it sends are queued and delivered when
the test says so, as a real shell would run them a moment later.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from coresim import CLOSED, CLOSING, CONNECTING, IDLE, Shell, Waiter

from pgmarina._core import Budget
from pgmarina._core.budget import GRANT, RECLAIM


class Fleet:
    """Fake shells sharing one budget, with the budget's pokes queued."""

    def __init__(self, max_total: int) -> None:
        self.budget = Budget(max_total)
        self.pokes: list[tuple[Shell, str]] = []
        self.shells: list[Shell] = []

    def pool(self, **settings: Any) -> Shell:
        shell = Shell(**settings)
        self.budget.join(shell.core, lambda word, shell=shell: self.pokes.append((shell, word)))
        self.shells.append(shell)
        return shell

    def open_pools(self, n: int) -> list[Shell]:
        """``n`` pools of ``min_size=0, max_size=5``, joined in order, then opened."""
        shells = [self.pool(min_size=0, max_size=5) for _ in range(n)]
        for shell in shells:
            shell.open()
        return shells

    def deliver(self, now: float) -> int:
        """Carry out every poke queued so far (and the ones they cause)."""
        n = 0
        while self.pokes:
            shell, word = self.pokes.pop(0)
            n += 1
            if word == GRANT:
                shell.core.granted(now)
            else:
                assert word == RECLAIM
                ok = shell.core.yield_idle(now)
                shell.drain()
                self.budget.reclaimed(shell.core, ok)
            shell.drain()
        return n

    def held(self) -> int:
        """Connections opening, open or closing, over every pool."""
        return sum(
            1 for s in self.shells for e in s.core.entries if e.state is not CLOSED
        )


def test_a_pool_under_a_full_budget_opens_nothing_and_claims_what_its_waiters_lack() -> None:
    fleet = Fleet(2)
    (a,) = fleet.open_pools(1)
    a.lease_all(2)
    w1, w2 = a.acquire(0.0), a.acquire(0.0)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter)
    assert a.in_flight() == 0
    assert fleet.held() == 2
    assert fleet.budget.stats().claims == 2


def test_a_full_budget_reclaims_the_least_recently_used_idle_connection_of_another_pool() -> None:
    fleet = Fleet(3)
    a, b, c = fleet.open_pools(3)
    a1 = a.lease_all(1, now=0.0)[0]
    b1, _b2 = b.lease_all(2, now=0.0)
    b.checkin(b1, 5.0)  # b's idle since 5
    a.checkin(a1, 3.0)  # a's idle since 3: the oldest, so a gives it up
    w = c.acquire(10.0)
    assert isinstance(w, Waiter)
    assert fleet.pokes == [(a, RECLAIM)]
    fleet.deliver(10.0)
    assert len(a.closes) == 1 and a.core.idle == []
    assert [e.state for e in b.core.idle] == [IDLE]
    a.close_all()  # the permit comes back and is reserved for c
    assert fleet.pokes == [(c, GRANT)]
    fleet.deliver(10.0)
    assert c.in_flight() == 1
    c.succeed(10.0)
    assert w.entry is not None
    assert fleet.held() == 3


def test_a_reclaim_takes_an_idle_connection_even_below_min_size() -> None:
    fleet = Fleet(2)
    a = fleet.pool(min_size=2, max_size=2)
    a.fill()
    b = fleet.pool(min_size=0, max_size=2)
    b.open()
    w = b.acquire(1.0)
    assert isinstance(w, Waiter)
    fleet.deliver(1.0)
    assert a.core.size == 1
    a.close_all()
    fleet.deliver(1.0)
    b.succeed(1.0)
    assert w.entry is not None
    # a wishes to get back to min_size, but the budget is full: it waits
    # quietly, claiming nothing and reclaiming nothing.
    a.core.housekeeping(2.0)
    a.drain()
    assert a.in_flight() == 0 and fleet.pokes == []
    assert fleet.budget.stats().claims == 0


def test_permits_given_back_go_to_the_oldest_claim_across_pools() -> None:
    fleet = Fleet(2)
    a, b, c = fleet.open_pools(3)
    (e1,) = a.lease_all(1)
    (e2,) = a.lease_all(1)
    wb = b.acquire(1.0)
    wc = c.acquire(2.0)
    assert isinstance(wb, Waiter) and isinstance(wc, Waiter)
    # a retires e1 (say it expired): its permit goes to b, which claimed first
    a.core.discard(e1, 3.0, lost=False)
    a.close_all()
    assert fleet.pokes == [(b, GRANT)]
    fleet.deliver(3.0)
    b.succeed(3.0)
    assert wb.entry is not None and wc.entry is None
    a.core.discard(e2, 4.0, lost=False)
    a.close_all()
    fleet.deliver(4.0)
    c.succeed(4.0)
    assert wc.entry is not None


def test_a_reservation_its_pool_no_longer_needs_passes_to_the_next_claim() -> None:
    fleet = Fleet(1)
    a, b, c = fleet.open_pools(3)
    (e1,) = a.lease_all(1)
    wb = b.acquire(1.0)
    wc = c.acquire(2.0)
    assert isinstance(wb, Waiter) and isinstance(wc, Waiter)
    wb.gone = True
    b.core.forget_waiter(wb, timed_out=True)
    a.core.discard(e1, 3.0, lost=False)
    a.close_all()
    fleet.deliver(3.0)  # b is poked, needs nothing now, passes it on to c
    assert b.in_flight() == 0
    assert c.in_flight() == 1
    c.succeed(3.0)
    assert wc.entry is not None
    assert fleet.budget.stats().used == 1


def test_a_closing_pool_drops_its_claims_and_passes_on_its_reservations() -> None:
    fleet = Fleet(1)
    a, b, c = fleet.open_pools(3)
    (e1,) = a.lease_all(1)
    b.acquire(1.0)
    wc = c.acquire(2.0)
    a.core.discard(e1, 3.0, lost=False)
    a.close_all()
    assert fleet.pokes == [(b, GRANT)]
    fleet.pokes.clear()  # b's shell closes before it runs the poke
    b.core.close(3.0)
    assert fleet.pokes == [(c, GRANT)]
    fleet.deliver(3.0)
    c.succeed(3.0)
    assert isinstance(wc, Waiter) and wc.entry is not None


def test_a_failed_connect_given_up_returns_its_permit() -> None:
    fleet = Fleet(1)
    (a,) = fleet.open_pools(1)
    w = a.acquire(0.0)
    assert isinstance(w, Waiter)
    assert fleet.budget.stats().used == 1
    w.gone = True
    a.core.forget_waiter(w, timed_out=True)
    assert a.fail(1.0) is None  # nobody needs it any more: dropped
    assert fleet.budget.stats().used == 0


def test_min_size_is_filled_only_from_free_permits() -> None:
    fleet = Fleet(3)
    a = fleet.pool(min_size=2, max_size=4)
    b = fleet.pool(min_size=2, max_size=4)
    a.fill()
    b.fill()
    assert a.core.size == 2 and b.core.size == 1
    assert fleet.budget.stats().claims == 0 and fleet.pokes == []


@pytest.mark.parametrize("seed", range(20))
def test_the_budget_is_never_exceeded_under_random_traffic_and_no_waiter_is_lost(
    seed: int,
) -> None:
    """Random acquires, releases, timeouts, failures and closes over four
    pools: at every step the connections opening, open or closing stay within
    ``max_total``, the budget's count matches them, and in the end every
    waiter that did not give up is served."""
    rng = random.Random(seed)
    max_total = 5
    fleet = Fleet(max_total)
    shells = [fleet.pool(min_size=rng.randint(0, 2), max_size=4) for _ in range(4)]
    for s in shells:
        s.open()
    leased: list[tuple[Shell, Any]] = []
    waiters: list[tuple[Shell, Waiter]] = []
    now = 0.0

    def check() -> None:
        held = fleet.held()
        assert held <= max_total
        reserved = sum(fleet.budget._reserved.values())
        assert fleet.budget.used == held + reserved

    for _ in range(400):
        now += rng.random()
        s = rng.choice(shells)
        op = rng.random()
        if op < 0.35:
            got = s.acquire(now)
            if isinstance(got, Waiter):
                waiters.append((s, got))
            else:
                leased.append((s, got))
        elif op < 0.6 and leased:
            s2, e = leased.pop(rng.randrange(len(leased)))
            s2.checkin(e, now)
        elif op < 0.7 and waiters:
            s2, w = waiters.pop(rng.randrange(len(waiters)))
            if w.entry is None:
                w.gone = True
                s2.core.forget_waiter(w, timed_out=True)
            else:
                leased.append((s2, w.entry))
        elif op < 0.8:
            s.succeed(now, 1)
        elif op < 0.85 and s.connects:
            s.fail(now)
        elif op < 0.9:
            s.close_all()
        elif op < 0.95:
            s.retry(now + 10)
            s.core.housekeeping(now)
            s.drain()
        else:
            fleet.deliver(now)
        for s2, w in list(waiters):
            if w.entry is not None:
                waiters.remove((s2, w))
                leased.append((s2, w.entry))
        check()
    # Settle: give everything back and let all the work finish.
    for s2, e in leased:
        s2.checkin(e, now)
    for _ in range(200):
        now += 1.0
        fleet.deliver(now)
        for s2 in shells:
            s2.retry(now + 10)
            s2.succeed(now)
            s2.close_all()
            for w in [w for sh, w in waiters if sh is s2 and w.entry is not None]:
                s2.checkin(w.entry, now)  # type: ignore[arg-type]
                waiters.remove((s2, w))
            s2.core.housekeeping(now)
            s2.drain()
        check()
        if not waiters and not fleet.pokes:
            break
    assert waiters == [], f"waiters never served: {waiters}"
    for s2 in shells:  # the last tick may have started min_size connects
        s2.retry(now + 10)
        s2.succeed(now)
    check()
    assert all(e.state is not CONNECTING for s2 in shells for e in s2.core.entries)


def test_retry_reclaims_finds_a_connection_that_went_idle_after_the_claim() -> None:
    fleet = Fleet(1)
    a, b = fleet.open_pools(2)
    (e,) = a.lease_all(1)
    w = b.acquire(1.0)
    assert isinstance(w, Waiter)
    assert fleet.pokes == []  # nothing idle anywhere: nothing to reclaim yet
    assert fleet.budget.retry_reclaims() == 0
    a.checkin(e, 2.0)  # idle now, and a's check-in does not ask the budget
    assert fleet.pokes == []
    assert fleet.budget.waiting
    assert fleet.budget.retry_reclaims() == 1
    assert fleet.pokes == [(a, RECLAIM)]
    assert fleet.budget.retry_reclaims() == 0  # one reclaim per claim at most
    fleet.deliver(2.0)
    a.close_all()
    fleet.deliver(2.0)
    b.succeed(2.0)
    assert w.entry is not None and not fleet.budget.waiting


def test_a_returned_lease_closes_for_another_pools_older_claim_rather_than_serve_a_newer_caller(
) -> None:
    """Fairness across pools: a busy pool cannot keep its connections for
    its own newer callers while another pool's caller waits longer."""
    fleet = Fleet(1)
    a, b = fleet.open_pools(2)
    (e,) = a.lease_all(1)
    wb = b.acquire(1.0)  # b claims the permit first
    wa = a.acquire(2.0)  # then a caller of a's own queues
    assert isinstance(wb, Waiter) and isinstance(wa, Waiter)
    a.checkin(e, 3.0)
    assert wa.entry is None and e.state is CLOSING
    a.close_all()
    fleet.deliver(3.0)
    b.succeed(3.0)
    assert wb.entry is not None
    # a's caller is next in line: b's lease comes back idle (b has no caller
    # left), and the registry's retry reclaims it for a.
    b.checkin(wb.entry, 4.0)
    assert fleet.budget.retry_reclaims() == 1
    fleet.deliver(4.0)
    b.close_all()
    fleet.deliver(4.0)
    a.succeed(4.0)
    assert wa.entry is not None


def test_a_returned_lease_serves_its_own_pools_caller_when_that_one_waited_longer() -> None:
    fleet = Fleet(1)
    a, b = fleet.open_pools(2)
    (e,) = a.lease_all(1)
    wa = a.acquire(1.0)
    wb = b.acquire(2.0)
    assert isinstance(wb, Waiter) and isinstance(wa, Waiter)
    a.checkin(e, 3.0)
    assert wa.entry is e and wb.entry is None
