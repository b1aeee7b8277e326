"""The notebooks' Markdown cells carry no hand-typed results: every number a reader sees about
a result is printed from the records by a code cell, so it cannot go stale when the runs
change. Recipe constants written as settings (``μ₀ = 0.01``) are allowed."""
from __future__ import annotations

import json
import re

import pytest

from dannlib.utils import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# an accuracy-like decimal (0.74, .766) or a percentage, not written as a setting "name = value"
RESULT_LIKE = re.compile(r"(?<![\w.=])(?<!= )(?:0?\.\d{2,}|\d+(?:\.\d+)?\s?%)")


def result_like_numbers(text: str) -> list[str]:
    return [m.group(0) for m in RESULT_LIKE.finditer(text)]


def test_the_check_catches_typed_results():
    assert result_like_numbers("DANN reaches 0.74 on MNIST-M, the paper .7666; 12% better") == ["0.74", ".7666", "12%"]
    assert result_like_numbers("SGD, momentum 0.9, eq. 7 (μ₀ = 0.01, β = 0.75), 10,000 steps, section 5.2") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_cells_hold_no_typed_result_numbers(path):
    nb = json.loads(path.read_text())
    found = {i: nums for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"
             and (nums := result_like_numbers("".join(c["source"])))}
    assert not found, (f"{path.name}: Markdown cells {sorted(found)} type result-like numbers {found}; print them "
                       "from the records in a code cell (display(Markdown(...))) instead")
