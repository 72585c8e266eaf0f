"""``pgmarina bench --plot`` draws a figure a page can show (Documentation site issue).

The plot used to grow 1.2 inches per contender per concurrency level: 8 contenders at 3 levels
made a 2880 px wide strip whose labels were unreadable when a page scaled it down.  The rows
here are shaped as ``pgmarina bench --json`` writes them; no server is needed to draw them.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from pgmarina.cli.bench import CONTENDERS, _plot

pytest.importorskip("matplotlib")


def rows_for(concs: list[int]) -> list[dict[str, Any]]:
    rows = []
    for conc in concs:
        for k, contender in enumerate(CONTENDERS):
            ratio = 1.0 if contender.name == contender.baseline else 0.5 + 0.1 * k
            rows.append({
                "conc": conc, "contender": contender.name, "tasks": conc,
                "ops_per_s": 1000.0 * (k + 1), "p50_ms": 0.1, "p99_ms": 1.0,
                "baseline": contender.baseline, "ratio": ratio,
                "ratio_q1": ratio * 0.9, "ratio_q3": ratio * 1.1,
            })
    return rows


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


@pytest.mark.parametrize("concs", [[1, 10, 100], [1, 2, 5, 10, 20, 50, 100, 200]],
                         ids=["three-levels", "eight-levels"])
def test_the_bench_plot_of_every_contender_is_at_most_1600_px_wide(
    tmp_path: Path, concs: list[int]
) -> None:
    """Regression: 8 contenders x 3 concurrency levels drew a 2880 x 400 px figure."""
    assert len(CONTENDERS) == 8
    plot = tmp_path / "bench.png"
    _plot(rows_for(concs), str(plot))
    width, height = png_size(plot)
    assert 600 <= width <= 1600, width
    assert height >= 400
    assert width / height <= 3.4  # a figure, not a strip


def test_the_bench_plot_of_one_contender_pair_stays_a_readable_size(tmp_path: Path) -> None:
    plot = tmp_path / "bench.png"
    rows = [r for r in rows_for([3]) if r["contender"] in ("pgmarina", "asyncpg-pool")]
    _plot(rows, str(plot))
    width, _ = png_size(plot)
    assert 600 <= width <= 800, width
