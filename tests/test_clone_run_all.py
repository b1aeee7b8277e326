"""Run All of a committed notebook from a clone at another path works and writes only inside
that clone (no browser: nbclient runs the notebook as JupyterLab's Run All would, every cell
in order, in a kernel started in the clone's notebooks/ folder).

The reader's environment is that of a person who cloned the project and ran `make lab`:
DANNLIB_PROFILE=smoke and DANNLIB_DATA set, no DANNLIB_FIGURES/DANNLIB_RESULTS/DANNLIB_CACHE
(the notebooks' own defaults, ../figures and ../results, decide), and the clone's dannlib and
dann_study imported (PYTHONPATH, as the clone's own editable install would give)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import browser_helpers as H

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = "01_toy_blobs"  # the fastest under smoke, and it needs no data


@pytest.mark.slow
def test_run_all_from_a_clone_at_another_path_writes_only_inside_it(tmp_path):
    clone = H.copy_project(tmp_path / "elsewhere" / "dann-study")
    notebooks = clone / "notebooks"
    committed = (notebooks / f"{NOTEBOOK}.ipynb").read_bytes()
    nb = nbformat.reads(committed.decode(), as_version=4)

    # A cell other than the parameters cell that sets a parameter to a literal (papermill's
    # injected-parameters cell of the machine that last ran it) overrides DANNLIB_PROFILE, and an
    # absolute path in it would send this run's outputs into that machine's checkout: stop here.
    overrides = H.overriding_parameters(nb)
    assert not overrides, (
        f"notebooks/{NOTEBOOK}.ipynb sets parameters outside its parameters cell, so Run All ignores "
        f"DANNLIB_PROFILE / the parameters cell there: " + "; ".join(overrides))

    env = H.clone_env(clone, DANNLIB_PROFILE="smoke")
    for package in ("dannlib", "dann_study"):
        imported = subprocess.run([sys.executable, "-c", f"import {package}; print({package}.__file__)"],
                                  cwd=notebooks, env=env, capture_output=True, text=True, check=True).stdout.strip()
        assert Path(imported).resolve().is_relative_to(clone.resolve()), \
            f"the kernel would import {imported}, not the clone's {package}"

    clone_before, real_before = H.listing(clone), H.real_tree(NOTEBOOK)
    parent_before = sorted(os.listdir(clone.parent))

    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=1800,
                                     resources={"metadata": {"path": str(notebooks)}})
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"Run All of notebooks/{NOTEBOOK}.ipynb in the clone failed:\n{e}")

    cells = H.code_cells(nb)
    assert all(c.get("execution_count") for c in cells), "a code cell did not run"
    assert not [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert H.image_outputs(nb) > 0, "Run All showed no figure"
    printed = "".join(o.get("text", "") for c in cells for o in c.get("outputs", []) if o["output_type"] == "stream")
    assert "profile=smoke" in printed, "the notebook did not take the profile from DANNLIB_PROFILE=smoke"

    problems = H.footprint_problems(clone, NOTEBOOK, clone_before, real_before, parent_before)
    assert not problems, "\n".join(problems)
    # nbclient ran the notebook in memory: the clone's copy of it is as committed
    assert (notebooks / f"{NOTEBOOK}.ipynb").read_bytes() == committed
