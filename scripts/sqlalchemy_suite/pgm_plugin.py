"""pytest plugin: every PostgreSQL engine SQLAlchemy's own test suite makes runs on PgMarinaPool.

Loaded by ``run.sh`` with ``-p pgm_plugin``.  ``PGM_POOL=0`` leaves SQLAlchemy's own pools
(a baseline run; the plugin only reports); anything else switches them.

How: at session start, after the suite's conftest has put its ``lib/`` on ``sys.path`` and
before SQLAlchemy's pytest plugin builds ``testing.db``, the PostgreSQL dialects'
``get_pool_class`` (what ``create_engine`` asks when neither ``pool=`` nor ``poolclass=`` is
given) returns PgMarinaPool for the drivers it pools.  So ``testing.db``, every
``testing_engine()`` and every bare ``create_engine()``/``create_async_engine()`` in a test
gets it; a test that passes its own ``poolclass=`` or ``pool=`` keeps what it asked for.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

ENABLED = os.environ.get("PGM_POOL", "1") != "0"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: Any) -> None:
    import sqlalchemy

    print(
        f"\n[pgm_plugin] sqlalchemy {sqlalchemy.__version__} from {sqlalchemy.__file__}; "
        f"PgMarinaPool {'on' if ENABLED else 'off'}"
    )
    if not ENABLED:
        return
    from sqlalchemy.dialects.postgresql.base import PGDialect

    from pgmarina.contrib.sqlalchemy import _SHELLS, PgMarinaPool

    stock = PGDialect.get_pool_class.__func__  # type: ignore[attr-defined]

    def get_pool_class(cls: Any, url: Any) -> Any:
        if (bool(cls.is_async), cls.driver) in _SHELLS:
            return PgMarinaPool
        return stock(cls, url)

    PGDialect.get_pool_class = classmethod(get_pool_class)  # type: ignore[method-assign,assignment]


def pytest_collection_finish(session: Any) -> None:
    from sqlalchemy.testing import config

    db = config.db
    print(f"[pgm_plugin] testing.db pool: {type(db.pool).__name__ if db is not None else None}")
    if ENABLED and db is not None and db.dialect.name == "postgresql":
        from pgmarina.contrib.sqlalchemy import PgMarinaPool

        assert type(db.pool) is PgMarinaPool, f"the suite's engine kept {type(db.pool)}"
