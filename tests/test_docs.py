"""The docs stay a page a reader takes in quickly, and every number in them comes from a record.

docs/RESULTS.md copies its tables from the lab records in docs/lab/ (written by the experiment
scripts); these tests check that each table names exactly one record and that every number in the
table occurs in it, so a number typed by hand or left over from an older run fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "RESULTS.md"
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _sections(text: str) -> list[str]:
    return re.split(r"\n(?=#{2,3} )", text)


def test_results_page_is_short():
    lines = RESULTS.read_text().splitlines()
    assert len(lines) <= 300, f"docs/RESULTS.md has {len(lines)} lines (a page, not a notebook: at most 300)"
    long = [i for i, line in enumerate(lines, 1) if len(line) > 400]
    assert not long, f"docs/RESULTS.md lines over 400 characters: {long}"


def _table_sections() -> list[tuple[str, list[str], str]]:
    out = []
    for section in _sections(RESULTS.read_text()):
        rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
        if rows:
            links = sorted(set(re.findall(r"\]\((lab/[\w.-]+\.md)\)", section)))
            out.append((section.splitlines()[0], rows, links[0] if len(links) == 1 else f"{len(links)} links"))
    return out


@pytest.mark.parametrize("heading,rows,record", _table_sections(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_results_table_copies_one_lab_record(heading, rows, record):
    assert record.startswith("lab/"), f"{heading}: a table links exactly one lab record, found {record}"
    text = (REPO / "docs" / record).read_text()
    numbers = set(NUMBER.findall(text))
    for row in rows:
        missing = [n for n in NUMBER.findall(row) if n not in numbers]
        assert not missing, f"{heading}: {missing} of row {row[:100]!r} are not in {record}"


def test_links_in_the_docs_resolve():
    for doc in ["README.md", "docs/RESULTS.md", "docs/METHOD.md", "docs/DATA.md", "docs/ARCHITECTURE.md",
                "docs/lab/README.md"]:
        path = REPO / doc
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            target = target.split("#")[0]
            if target and not target.startswith("http"):
                assert (path.parent / target).exists(), f"{doc}: link {target} does not resolve"


def test_every_lab_record_has_its_data():
    records = sorted((REPO / "docs" / "lab").glob("*.md"))
    assert records
    for record in records:
        if record.name != "README.md":
            assert record.with_suffix(".json").is_file(), f"{record.name} has no .json beside it"


def test_readme_leads_with_the_two_commands():
    head = "\n".join((REPO / "README.md").read_text().splitlines()[:20])
    assert "make demo" in head and "make test" in head
