"""The docs site builds with ``mkdocs build --strict`` (Documentation site issue): a broken
link, a page missing from the nav, or a docstring mkdocstrings cannot read fails the tests, not
only the site."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_docs_site_builds_in_strict_mode_with_the_api_reference(tmp_path: Path) -> None:
    # The docs tools are in the dev extra, which the tests need anyway: missing is a failure.
    missing = [m for m in ("mkdocs", "material", "mkdocstrings_handlers")
               if importlib.util.find_spec(m) is None]
    assert not missing, f"not installed: {missing} (pip install 'pgmarina[docs]')"
    site = tmp_path / "site"
    # No -q: mkdocs counts the warnings --strict fails on only when it logs them.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        capture_output=True, text=True, timeout=280, cwd=ROOT, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    home = (site / "index.html").read_text()
    assert "pgmarina" in home
    # mkdocstrings rendered the docstrings, not just the page titles.
    reference = (site / "reference" / "pgmarina" / "index.html").read_text()
    assert "An asyncio connection pool for asyncpg or psycopg 3" in reference
    assert "check_window" in reference
    # docs/_ext/griffe_pgmarina.py wrote the defaults' values into the signatures, the thread
    # Pool's own barge_window included.
    signatures = re.sub(r"<[^>]+>", "", reference)
    assert "_D." not in signatures
    assert "_EMPTY" not in signatures  # PoolStats' histograms show Histogram()
    assert "min_size: int = 1" in signatures
    assert "barge_window: float = 0.02" in signatures
    assert "barge_window: float = 0.0," in signatures
    assert ":class:" not in signatures  # Sphinx roles shown as code, not as they are written
    # Each module's own reference page rendered its docstrings (registry's budget essay, the
    # listener's Gap, both exporters, the queries and psqlpy façades, HostStats' fields), and
    # the Benchmarks page shows the plot `pgmarina bench --plot` made.
    for page, text in (
        ("registry", "How the cap works"),
        ("listener", "may have been missed"),
        ("contrib-prometheus", "pgmarina_acquire_wait_seconds"),
        ("contrib-otel", "db.client.connection.wait_time"),
        ("compat-queries", "set_max_total"),
        ("compat-psqlpy", "pool and connection API on pgmarina"),
        ("compat-psqlpy", "ConnectionPoolConfigurationError"),
        ("pgmarina", "role_changes"),
        # PoolStats' fields, documented in its docstring's Attributes (not in #: comments,
        # which the reference does not render).
        ("pgmarina", "Connections closed after a failed checkout"),
        ("contrib-sqlalchemy", "A SQLAlchemy pool whose connections come from a pgmarina pool"),
    ):
        assert text in (site / "reference" / page / "index.html").read_text(), page
    assert '<img alt="Median' in (site / "benchmarks" / "index.html").read_text()
    assert (site / "assets" / "bench.png").stat().st_size > 1000
    # The entry-state diagram is left for Mermaid to draw in the browser.
    concepts = (site / "concepts" / "index.html").read_text()
    assert '<pre class="mermaid">' in concepts
