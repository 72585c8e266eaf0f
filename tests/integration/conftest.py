"""Fixtures of the integration tests (the shared ones live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from faultproxy import FaultProxy


@pytest.fixture
def pg_proxy(pg: Any, fault_proxy: Callable[[str, int], FaultProxy]) -> FaultProxy:
    """A fault proxy in front of the shared server (passing bytes through until told not to)."""
    return fault_proxy(pg.host, pg.port)
