"""Every Python example in README.md runs, pasted as it is with only the DSN changed, to the
output README shows after it, with no warning and nothing on stderr (Day one issue: "Done
when").

Each example is a ```python block followed by a ```text block with its output.  The example
runs in a fresh interpreter with ``-W error`` against the test server; in its output the
server's ``host:port/dbname`` is written back as the README's, so ``repr(pool)`` compares.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pgmarina
from pgmarina._redact import describe_target

README = Path(__file__).resolve().parents[2] / "README.md"
README_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
README_TARGET = "127.0.0.1:5432/postgres"


def _examples() -> list[tuple[str, str]]:
    text = README.read_text()
    pairs = re.findall(r"```python\n(.*?)```\s*```text\n(.*?)```", text, re.S)
    assert len(pairs) == text.count("```python"), "a README example has no output block"
    return pairs


EXAMPLES = _examples()


def test_the_readme_has_the_examples_this_file_runs() -> None:
    assert len(EXAMPLES) >= 2
    assert any("async with pool.acquire() as conn" in code for code, _ in EXAMPLES)


@pytest.mark.parametrize(
    ("code", "expected"), EXAMPLES, ids=[f"example-{i + 1}" for i in range(len(EXAMPLES))]
)
def test_a_readme_example_runs_to_the_output_the_readme_shows(
    pg: Any, tmp_path: Path, code: str, expected: str
) -> None:
    assert code.count(f'DSN = "{README_DSN}"') == 1, "each example sets DSN once, at the top"
    script = tmp_path / "example.py"
    script.write_text(code.replace(README_DSN, pg.dsn))
    src = str(Path(pgmarina.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH")) if p
    )}
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=False,
    )
    assert proc.stderr == ""
    assert proc.returncode == 0
    output = proc.stdout.replace(describe_target(pg.dsn, {}), README_TARGET)
    assert output == expected
