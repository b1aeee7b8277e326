"""The committed notebooks and results carry nothing of the machine that made them: no
absolute paths (a clone elsewhere would write into that machine's checkout, and records
would name it) and no stderr outputs (warnings, progress bars) in the notebooks.

These scan the files in the repository; a failure names the file (and cell). The fix is
`python -m dann_study regenerate` (which writes neither), not editing the outputs by hand."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from dannlib.utils import PROJECT_ROOT

# An absolute path of a machine: /work/..., /home/..., /root/..., /tmp/..., /Users/...
ABSOLUTE = re.compile(r"(?<![\w.~$-])/(?:work|home|root|tmp|Users|mnt|scratch)/[\w.-]")

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TEXT_SUFFIXES = {".json", ".jsonl", ".ipynb", ".md", ".txt", ".csv", ".svg", ".yaml", ".yml"}
RESULTS = sorted(p for p in (PROJECT_ROOT / "results").rglob("*")
                 if p.suffix in TEXT_SUFFIXES
                 if p.is_file() and "models" not in p.relative_to(PROJECT_ROOT / "results").parts)


def _rel(path: Path) -> str:
    return path.relative_to(PROJECT_ROOT).as_posix()


def test_there_is_something_to_scan():
    assert len(NOTEBOOKS) >= 6 and any(p.name == "regeneration.json" for p in RESULTS)


def _cell_text(cell) -> str:
    """One cell as the notebook file holds it (source, outputs, metadata)."""
    return nbformat.writes(nbformat.from_dict({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def absolute_paths_in_notebook(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    found = []
    meta = nbformat.writes(nbformat.from_dict({"cells": [], "metadata": nb.metadata, "nbformat": 4,
                                               "nbformat_minor": 5}))
    for m in ABSOLUTE.finditer(meta):
        found.append(f"metadata: ...{meta[max(0, m.start() - 40):m.end() + 30]!r}")
    for i, cell in enumerate(nb.cells):
        text = _cell_text(cell)
        for m in ABSOLUTE.finditer(text):
            part = "source" if m.group(0) in cell.source else "outputs"
            found.append(f"cell {i} ({part}): ...{text[max(0, m.start() - 40):m.end() + 30]!r}")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_rel)
def test_committed_notebook_has_no_absolute_paths(path):
    found = absolute_paths_in_notebook(path)
    assert not found, f"{_rel(path)} holds absolute machine paths:\n" + "\n".join(found[:10])


@pytest.mark.parametrize("path", RESULTS, ids=_rel)
def test_results_file_has_no_absolute_paths(path):
    if path.suffix == ".ipynb":
        found = absolute_paths_in_notebook(path)
    else:
        text = path.read_text()
        found = [f"line {text.count(chr(10), 0, m.start()) + 1}: ...{text[max(0, m.start() - 40):m.end() + 30]!r}"
                 for m in ABSOLUTE.finditer(text)]
    assert not found, f"{_rel(path)} holds absolute machine paths:\n" + "\n".join(found[:10])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_rel)
def test_committed_notebook_has_no_stderr_output(path):
    nb = nbformat.read(path, as_version=4)
    found = [f"cell {i}: {out.get('text', '')[:120]!r}" for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" for out in cell.outputs
             if out.get("output_type") == "stream" and out.get("name") == "stderr"]
    assert not found, (f"{_rel(path)} has {len(found)} stderr output(s) (warnings or progress bars):\n"
                       + "\n".join(found[:5]))


def test_the_scan_finds_what_it_is_for(tmp_path):
    """The scanner flags an injected absolute path and leaves relative ones alone."""
    cell = nbformat.v4.new_code_cell('results_dir = "/home/someone/dann-study/results"')
    ok = nbformat.v4.new_code_cell('results_dir = "../results"  # or $DANNLIB_RESULTS, ~/x, a/tmp/b')
    nb = nbformat.v4.new_notebook(cells=[ok, cell])
    nb.metadata["papermill"] = {"input_path": "/tmp/in.ipynb"}
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, str(path))
    found = absolute_paths_in_notebook(path)
    assert len(found) == 2 and found[0].startswith("metadata") and found[1].startswith("cell 1 (source)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_carries_the_committed_profile(path):
    """Each committed notebook was last executed (by regenerate, in place) under the profile
    figures/ belongs to, with that profile's seeds, and its parameters cell defaults to it, so
    that Run All in JupyterLab renders what the file shows. A notebook regenerated under
    another profile with --in-place, or edited afterwards, fails here."""
    from dann_study.plan import plan
    from dann_study.regenerate import COMMITTED_PROFILE

    nb = nbformat.read(path, as_version=4)
    params = nb.metadata.get("papermill", {}).get("parameters", {})
    assert params.get("profile") == COMMITTED_PROFILE, (
        f"{_rel(path)} was executed under {params.get('profile')!r}; regenerate it with "
        f"python -m dann_study regenerate --profile {COMMITTED_PROFILE} --only {path.name[:2]}")
    assert params.get("seeds") in (None, list(plan(path.name[:2], COMMITTED_PROFILE).seeds))
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert f'os.environ.get("DANNLIB_PROFILE", "{COMMITTED_PROFILE}")' in cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_names_no_staging_folder(path):
    """regenerate runs a notebook with DANNLIB_FIGURES/RESULTS pointing at staging folders
    (.staging-<pid>-<name>) that are renamed away afterwards: an output that names one points
    at nothing. Print paths relative to the final folders (e.g. ``path.parent.name``)."""
    nb = nbformat.read(path, as_version=4)
    found = [f"cell {i}" for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and ".staging-" in _cell_text(cell)]
    assert not found, f"{_rel(path)}: outputs name a staging folder in {found}"
