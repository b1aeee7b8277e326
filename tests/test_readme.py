"""The README a newcomer reads: short, its result numbers printed by `make report` (never
typed), and its "your own data" snippet runs."""
from __future__ import annotations

import re

from dann_study.report import markdown_report
from dannlib.utils import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
MAX_LINES = 250


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = text.find("\n## ", start + len(heading))
    return text[start: nxt if nxt >= 0 else len(text)]


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of every Markdown table in ``markdown`` (header and separator left out),
    each as its stripped cells."""
    rows, block = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        else:
            rows += block[2:]
            block = []
    return rows


def _numeric(cells):
    return {c for c in cells if re.search(r"\d", c)}


def test_table_rows_reads_bodies_only():
    md = "text\n| a | 95% CI |\n|---|---|\n| x | [+0.1, +0.2] |\n\n| b |\n|---|\n| 0.5 (3) |\n"
    assert table_rows(md) == [["x", "[+0.1, +0.2]"], ["0.5 (3)"]]


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines; at most {MAX_LINES} (details go to docs/)"


def test_readme_result_numbers_are_printed_by_make_report():
    """Every row of the README's results tables matches one row of `make report PROFILE=paper`:
    each of its cells holding a digit is a cell of that report row."""
    results = _section(README.read_text(), "## Results")
    report_rows = [set(r) for r in table_rows(markdown_report(PROJECT_ROOT / "results", "paper"))]
    rows = [r for r in table_rows(results) if _numeric(r)]
    assert len(rows) >= 15, "the README's results tables were not found"
    stale = [r for r in rows if not any(_numeric(r) <= rep for rep in report_rows)]
    assert not stale, ("README result rows that `make report PROFILE=paper` does not print (paste them from "
                       f"its output): {stale}")


def test_readme_own_data_snippet_runs():
    section = _section(README.read_text(), "## Your own data")
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert "steps=1000" in code
    namespace: dict = {}
    exec(compile(code.replace("steps=1000", "steps=30"), "README.md (your own data)", "exec"), namespace)
    run, xt = namespace["run"], namespace["xt"]
    assert run.status == "ok" and 0.0 <= run.final["target_acc"] <= 1.0
    assert namespace["predictions"].shape == (len(xt),)
