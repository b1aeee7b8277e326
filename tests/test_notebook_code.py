"""Notebooks hold narrative, parameters, calls into dannlib and dann_study, and plots: no notebook code cell
defines a function (sentence builders, comparison rules and other helpers live in the package,
where they are tested: ``dann_study.report``, ``dannlib.stats``, ``dannlib.plotting``), and no
notebook cites a document that is not in the repository."""
from __future__ import annotations

import json
import re

import pytest

from dannlib.utils import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# a function definition anywhere in a cell (also indented, also async); a lambda is an expression
DEFINITION = re.compile(r"^\s*(?:async\s+)?def\s+\w+\s*\(", re.MULTILINE)
# the study's internal notes: the digest's sections and the specification's source texts
INTERNAL_REFERENCE = re.compile(r"REFERENCE\s*(?:§|sec)|\bseed\s+00\d\b", re.IGNORECASE)


def definitions(source: str) -> list[str]:
    return [m.group(0).strip() for m in DEFINITION.finditer(source)]


def test_the_scan_finds_definitions_and_internal_references():
    assert definitions("x = 1\ndef sentence(verdict, a, b):\n    return a\n") == ["def sentence("]
    assert definitions("for t in T:\n    def f(x): return x\n") == ["def f("]
    assert definitions("undefined = 'a define'\nprint('def x(')") == []
    assert INTERNAL_REFERENCE.search("blobs (seed 003, REFERENCE §2)")
    assert not INTERNAL_REFERENCE.search("seeds 0, 1, 2 (Ganin et al. 2016, sec. 5.1)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_code_cell_defines_a_function(path):
    cells = json.loads(path.read_text())["cells"]
    found = {i: d for i, c in enumerate(cells) if c["cell_type"] == "code" and (d := definitions("".join(c["source"])))}
    assert not found, (f"{path.name}: code cells {sorted(found)} define {found}; move the helper into dannlib or "
                       "dann_study (a sentence or table: dann_study.report; a comparison: dannlib.stats) and call it")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_cites_an_internal_document(path):
    cells = json.loads(path.read_text())["cells"]
    found = {i: m.group(0) for i, c in enumerate(cells) if (m := INTERNAL_REFERENCE.search("".join(c["source"])))}
    assert not found, (f"{path.name}: cells {sorted(found)} cite {found}, which is not in the repository: cite the "
                       "paper (author, venue, section) instead")
