"""Notebooks are saved in the form JupyterLab would save them (issue 24), so that opening one
does not mark it modified: JupyterLab sets the notebook's ``kernelspec`` to the started
kernel's (name, its kernelspec's display name and language) and marks the notebook dirty
when that differs from the file's. regenerate writes that kernelspec into every executed
notebook; ``regenerate --normalize`` rewrites notebooks so without executing them.
(tests/test_browser.py checks the same in a real JupyterLab: the opened tab is not dirty.)"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import ipykernel.kernelspec
import nbformat

from dann_study import regenerate as regen
from dann_study.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
LAB = {"display_name": ipykernel.kernelspec.get_kernel_dict()["display_name"], "language": "python",
       "name": "python3"}


def test_the_kernelspec_jupyterlab_writes():
    assert regen.transaction.lab_kernelspec() == LAB


def test_tidy_writes_the_labs_kernelspec():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    regen.tidy_notebook(nb, "01_a.ipynb", {"profile": "smoke"}, [])
    assert nb.metadata["kernelspec"] == LAB


def test_normalize_changes_only_the_kernelspec_of_the_committed_notebooks(tmp_path, capsys):
    nbdir = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", nbdir, ignore=shutil.ignore_patterns(".*"))
    before = {p.name: json.loads(p.read_text()) for p in sorted(nbdir.glob("[0-9][0-9]_*.ipynb"))}
    assert main(["regenerate", "--normalize", "--notebooks-dir", str(nbdir)]) == 0
    assert "notebook(s) rewritten" in capsys.readouterr().out
    for name, old in before.items():
        text = (nbdir / name).read_text()
        new = json.loads(text)
        assert new["metadata"].pop("kernelspec") == LAB
        old["metadata"].pop("kernelspec", None)
        assert new == old, name
        assert text == nbformat.writes(nbformat.reads(text, as_version=4)) + "\n"  # nbformat's own form
    assert main(["regenerate", "--normalize", "--notebooks-dir", str(nbdir)]) == 0
    assert f"0 of {len(before)} notebook(s) rewritten" in capsys.readouterr().out  # idempotent
