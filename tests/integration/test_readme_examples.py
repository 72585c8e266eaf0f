"""Every Python example in README.md runs, pasted as it is with only the DSN changed, to the
output README shows after it, with no warning and nothing on stderr (Day one issue: "Done
when").

Each example is a ```python block followed by a ```text block with its output.  The example
runs in a fresh interpreter with ``-W error`` against the test server; in its output the
server's ``host:port/dbname`` is written back as the README's, so ``repr(pool)`` compares.
Finding and running examples is tests/docexamples.py's, shared with the docs site's test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import docexamples

README = Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> list[docexamples.Example]:
    # Sketches of an application's code (Django's settings, a psqlpy migration) are fenced
    # ```py: README runs only ```python blocks.
    python = [e for e in docexamples.examples(README) if e.language == "python"]
    assert all(e.output is not None for e in python), "a README example has no output block"
    return python


EXAMPLES = _examples()


def test_the_readme_has_the_examples_this_file_runs() -> None:
    assert len(EXAMPLES) >= 2
    assert any("async with pool.acquire() as conn" in e.code for e in EXAMPLES)


@pytest.mark.parametrize(
    "example", EXAMPLES, ids=[f"example-{i + 1}" for i in range(len(EXAMPLES))]
)
def test_a_readme_example_runs_to_the_output_the_readme_shows(
    pg: Any, tmp_path: Path, example: docexamples.Example
) -> None:
    code = example.code
    assert code.count(f'DSN = "{docexamples.EXAMPLE_DSN}"') == 1, (
        "each example sets DSN once, at the top"
    )
    returncode, output, stderr = docexamples.run(code, pg.dsn, tmp_path)
    assert stderr == ""
    assert returncode == 0
    assert output == example.output
