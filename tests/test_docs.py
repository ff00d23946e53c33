"""The README documents every table column, and CI runs the README's test command."""

import re
from pathlib import Path

import pytest

from anonray.records.tables import RESTRICTED_TABLES, TABLES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


ALL_TABLES = {**TABLES, **RESTRICTED_TABLES}


@pytest.mark.parametrize("table", sorted(ALL_TABLES))
def test_every_column_is_documented(table):
    section = README.split(f"### `{table}`", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([a-z0-9_]+)`", section))
    missing = [name for name in ALL_TABLES[table].names if name not in documented]
    assert not missing, f"undocumented {table} columns: {missing}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in README and "make demo" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
