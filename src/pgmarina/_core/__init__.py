"""The pool's brain: every decision, no IO.

Nothing in this package awaits, sleeps, locks, reads a clock or touches a
socket.  The shells (:mod:`pgmarina._async`, :mod:`pgmarina._sync`) feed it
events with an explicit ``now`` and carry out what it decides; the tests in
``tests/core`` drive it with a fake clock and no event loop.
"""

from .budget import Budget, BudgetStats
from .config import PoolConfig
from .entry import ALLOWED, Entry, EntryState
from .pool import PoolCore
from .stats import PoolStats

__all__ = [
    "ALLOWED",
    "Budget",
    "BudgetStats",
    "Entry",
    "EntryState",
    "PoolConfig",
    "PoolCore",
    "PoolStats",
]
