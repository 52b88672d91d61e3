"""The docs point at things that exist: every file path and test named in README.md, docs/*.md and
benchmarks/README.md is in the repository (paths are read relative to the root, src/fastclr/, tests/
and benchmarks/), and every ``file.py::test_name`` is defined in that file."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CITED = re.compile(r"`((?:[A-Za-z0-9_.-]+/)+[A-Za-z0-9_.-]+\.(?:py|sh|yaml|md))(?:::([A-Za-z0-9_]+))?`")
BASES = [ROOT, ROOT / "src" / "fastclr", ROOT / "src", ROOT / "tests", ROOT / "benchmarks"]


def citations() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOCS:
        for m in CITED.finditer(doc.read_text()):
            path = m.group(1)
            if path.startswith(("OUT/", "DIR/", "/", "~", "RUN/")) or "*" in path:
                continue  # a user's files, not the repository's
            found.append((doc.name, path, m.group(2) or ""))
    return sorted(set(found))


def test_docs_cite_files():
    assert len(citations()) > 20  # the pattern finds the citations


@pytest.mark.parametrize("doc,path,test", citations())
def test_every_cited_file_and_test_exists(doc, path, test):
    where = [base / path for base in BASES if (base / path).is_file()]
    assert where, f"{doc} cites {path}, which is not in the repository"
    if test:
        assert re.search(rf"^\s*(async\s+)?def {test}\(", where[0].read_text(), re.M), f"{doc} cites {path}::{test}"
