"""Several hosts: which server each connect goes to, and what each one is.

A pool given several hosts (a primary and its standbys) keeps a
:class:`HostBook`: one :class:`Host` per server, with what the pool has
learnt about it.  Like the rest of the core it does no IO and reads no
clock; the shells tell it what happened, with a ``now``.

What the book knows about a host
--------------------------------
*Its role.*  ``None`` until a connection to it reports one, then
``PRIMARY`` or ``STANDBY``.  A role is the server's, so every connection to
a host shares it: when a connect or a keepalive ping finds that a standby
was promoted, all the pool's connections to that host are primaries from
then on, and ones that no longer fit the pool's ``target_session_attrs``
are retired (idle ones at once, leased ones when they come back).

*Its health.*  A connect that fails puts the host down for a while
(exponential backoff with jitter, from ``backoff_initial`` to
``backoff_max``, as the pool's own): while it is down, connects go to the
other hosts, and only one connect at a time probes it again when its
backoff ends.  So a dead host costs one failed connect per backoff period,
not one per caller.

*When to look at a standby again.*  A caller that needs a primary cannot
use a standby, but a standby may be promoted at any time.  So a known
standby is not asked for a primary again until ``recheck_at``: backoff
again, capped at ``backoff_max``, which bounds how long after a promotion
the pool notices it when no primary is left.

Choosing a host
---------------
:meth:`HostBook.pick` takes what the connect is for (``want``): ``None``
for the pool's own ``target_session_attrs``, or a caller's ``READ_WRITE``
or ``READ_ONLY``.  It returns the first host, in the pool's order
(the given order, or shuffled for each pick with
``load_balance_hosts="random"``), that is up and either has the role
wanted, has no known role yet, or is a standby due for a recheck.  Known
roles that are preferred come first.  ``None`` means no host may be tried
now; :meth:`HostBook.wait` says for how long.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "BALANCE",
    "PRIMARY",
    "READ_ONLY",
    "READ_WRITE",
    "STANDBY",
    "TARGETS",
    "Host",
    "HostBook",
    "HostStats",
]

PRIMARY = "primary"
STANDBY = "standby"

#: What a routed caller asks for: only ever a primary, or a standby when
#: one is healthy, else the primary.
READ_WRITE = "read-write"
READ_ONLY = "read-only"

#: libpq's ``target_session_attrs``: the roles the pool connects to, best first.
#: libpq's ``read-write`` also refuses a primary whose
#: ``default_transaction_read_only`` is on; the pool's takes any primary, since
#: the role is what the server reports and a session setting is the caller's.
TARGETS: dict[str, tuple[str, ...]] = {
    "any": (PRIMARY, STANDBY),
    "read-write": (PRIMARY,),
    "primary": (PRIMARY,),
    "read-only": (STANDBY,),
    "standby": (STANDBY,),
    "prefer-standby": (STANDBY, PRIMARY),
}

#: libpq's ``load_balance_hosts``.
BALANCE = ("disable", "random")

_INF = math.inf


@dataclass(frozen=True, slots=True)
class HostStats:
    """What the pool knows about one host (in :attr:`PoolStats.hosts`).

    One per host, in the order the hosts were given; a single-host pool
    (one host, and none of ``hosts``, ``target_session_attrs``,
    ``load_balance_hosts``) has none.  The counters grow from the pool's
    creation.

    Attributes:
        host: ``"name:port"`` (or the name alone, for the driver's default port).
        role: ``"primary"``, ``"standby"``, or ``"unknown"`` until a
            connection to it reports one.
        up: Its last connect did not fail (a host that is not up is tried
            again only when its backoff ends).
        size: Connections open to it, or being opened.
        idle: Of those, idle in the pool.
        in_use: Of those, leased (or being checked or reset).
        connects: Connects to it that succeeded.
        connects_failed: Connects to it that failed.
        role_changes: Promotions or demotions noticed.
    """

    host: str
    role: str
    up: bool
    size: int
    idle: int
    in_use: int
    connects: int
    connects_failed: int
    role_changes: int


class Host:
    """One server of a multi-host pool, and what the pool has learnt about it.

    Attributes:
        address: Host name or IP address (or a Unix socket directory).
        port: Port, or ``None`` for the driver's default.
        role: ``PRIMARY``, ``STANDBY``, or ``None`` while unknown.
        down_until: Connects are not tried before this (monotonic seconds).
        recheck_at: A known standby is not asked for a primary before this.
    """

    __slots__ = (
        "address",
        "connects",
        "connects_failed",
        "down_until",
        "failures",
        "port",
        "recheck_at",
        "rechecks",
        "role",
        "role_changes",
    )

    def __init__(self, address: str, port: int | None) -> None:
        self.address = address
        self.port = port
        self.role: str | None = None
        self.down_until = 0.0
        self.failures = 0  # consecutive failed connects: the backoff's exponent
        self.recheck_at = 0.0
        self.rechecks = 0  # consecutive connects that found it still a standby
        self.connects = 0
        self.connects_failed = 0
        self.role_changes = 0

    @property
    def name(self) -> str:
        return self.address if self.port is None else f"{self.address}:{self.port}"

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.role or 'unknown'}>"


class HostBook:
    """Per-host roles and health, and the choice of a host for each connect.

    Args:
        hosts: ``(address, port)`` pairs, in the order given.
        target: libpq's ``target_session_attrs`` (a key of :data:`TARGETS`).
        balance: ``load_balance_hosts="random"``: shuffle the order per pick.
        backoff_initial, backoff_max: The backoff bounds (the pool's own).
        rand: Source of jitter and shuffling in ``[0, 1)``.
    """

    def __init__(
        self,
        hosts: Sequence[tuple[str, int | None]],
        target: str = "any",
        *,
        balance: bool = False,
        backoff_initial: float = 0.01,
        backoff_max: float = 1.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if target not in TARGETS:
            raise ValueError(
                f"target_session_attrs must be one of {', '.join(TARGETS)}, not {target!r}"
            )
        self.hosts = [Host(a, p) for a, p in hosts]
        self.target = target
        self.roles = TARGETS[target]
        self.balance = balance
        self._initial = backoff_initial
        self._max = backoff_max
        self._rand = rand

    # ------------------------------------------------------------------
    # what fits what

    def fits(self, role: str | None) -> bool:
        """Whether the pool keeps connections to a server of ``role``."""
        return role in self.roles

    def accepts(self, want: str | None) -> tuple[str, ...]:
        """The roles a connect for ``want`` may land on, best first."""
        if want == READ_WRITE:
            return (PRIMARY,) if PRIMARY in self.roles else ()
        if want == READ_ONLY:
            return tuple(r for r in (STANDBY, PRIMARY) if r in self.roles)
        return self.roles

    def standby_hoped(self, now: float) -> bool:
        """Whether a standby may be had: a host that is up and is, or may be, one.

        A reader takes a primary connection only when no standby can be had.
        """
        if STANDBY not in self.roles:
            return False
        return any(h.down_until <= now and h.role != PRIMARY for h in self.hosts)

    # ------------------------------------------------------------------
    # choosing

    def _order(self) -> list[Host]:
        hosts = self.hosts
        if not self.balance or len(hosts) < 2:
            return hosts
        keyed = sorted((self._rand(), i) for i in range(len(hosts)))
        return [hosts[i] for _, i in keyed]

    def pick(self, now: float, want: str | None = None) -> Host | None:
        """The host the next connect for ``want`` goes to, or ``None`` for "not now".

        Hosts of the role wanted most come first, then hosts whose role is
        not known yet, then hosts of a fallback role, then known standbys due
        for a recheck when a primary is wanted.  Hosts that are down are
        skipped.
        """
        accepts = self.accepts(want)
        best: Host | None = None
        best_rank = _INF
        for host in self._order():
            if host.down_until > now:
                continue
            if host.role in accepts:
                # The role wanted most first; a fallback role (a primary for
                # a reader) only after hosts whose role is not known yet.
                rank = 2.0 * accepts.index(host.role)
            elif host.role is None:
                rank = 1.0
            elif host.recheck_at <= now:
                rank = 20.0  # a standby that may have been promoted since
            else:
                continue
            if rank < best_rank:
                best, best_rank = host, rank
        return best

    def wait(self, now: float, want: str | None = None) -> float:
        """Seconds until :meth:`pick` may find a host for ``want`` (0: now)."""
        if self.pick(now, want) is not None:
            return 0.0
        accepts = self.accepts(want)
        soonest = _INF
        for host in self.hosts:
            at = host.down_until
            if host.role is not None and host.role not in accepts:
                at = max(at, host.recheck_at)
            soonest = min(soonest, at)
        return max(soonest - now, 0.001) if soonest < _INF else self._max

    def _delay(self, exponent: int) -> float:
        delay = min(self._max, self._initial * 2.0 ** min(exponent, 60))
        return delay * (0.5 + 0.5 * self._rand())

    # ------------------------------------------------------------------
    # what happened

    def failed(self, host: Host, now: float) -> None:
        """A connect to ``host`` failed: it is down until its backoff ends."""
        host.connects_failed += 1
        host.down_until = now + self._delay(host.failures)
        host.failures += 1

    def landed(self, host: Host, standby: bool, now: float) -> bool:
        """A connect to ``host`` succeeded and found it ``standby`` or not.

        Returns whether that is a change of role (a promotion or demotion).
        """
        host.connects += 1
        host.failures = 0
        host.down_until = 0.0
        return self.observed(host, standby, now, connected=True)

    def observed(self, host: Host, standby: bool, now: float, *, connected: bool = False) -> bool:
        """A connection to ``host`` reports its role; ``True`` if it changed."""
        role = STANDBY if standby else PRIMARY
        changed = host.role is not None and host.role != role
        if changed:
            host.role_changes += 1
        host.role = role
        if role == STANDBY:
            if connected:
                # Asked again (for a primary) only after a backoff: a standby
                # is not promoted by asking it every millisecond.
                host.recheck_at = now + self._delay(host.rechecks)
                host.rechecks += 1
        else:
            host.rechecks = 0
            host.recheck_at = 0.0
        return changed
