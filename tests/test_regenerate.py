"""dannlib.regenerate on tiny synthetic notebooks: in-place execution, failure isolation,
--only selection and argument errors. Three kernel launches in all (the slow test)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

from dannlib import regenerate as regen
from dannlib.__main__ import main

PARAMETERS = """\
import os
profile = "unset"
seeds = None
figures_dir = "unset"
results_dir = "unset"
data_root = None
"""

GOOD = """\
import json, os, sys
from pathlib import Path
out = Path(figures_dir, "01_good", "facts.json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"profile": profile, "seeds": seeds, "cwd": os.getcwd(),
                           "executable": sys.executable}))
print("wrote", out)
"""

BAD = 'raise RuntimeError("boom from 02_bad")\n'


def make_notebook(path: Path, body: str) -> None:
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {path.stem}"), params,
                                         nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def project(tmp_path):
    """notebooks/{01_good,02_bad}.ipynb, an unrelated figure, empty results/."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    make_notebook(nbdir / "01_good.ipynb", GOOD)
    make_notebook(nbdir / "02_bad.ipynb", BAD)
    other = tmp_path / "figures" / "09_other" / "figure.png"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"not touched")
    return tmp_path


def cli(project: Path, *extra: str) -> list[str]:
    return ["regenerate", "--notebooks-dir", str(project / "notebooks"), "--figures-dir",
            str(project / "figures"), "--results-dir", str(project / "results"), "--no-progress", *extra]


@pytest.mark.slow
def test_good_runs_in_place_and_failure_is_isolated(project, capsys):
    nbdir = project / "notebooks"
    bad_before = (nbdir / "02_bad.ipynb").read_bytes()
    mode_before = (nbdir / "01_good.ipynb").stat().st_mode
    other = project / "figures" / "09_other" / "figure.png"

    assert main(cli(project, "--profile", "smoke", "--seeds", "0,1")) == 1
    out, err = capsys.readouterr()
    assert "02_bad" in err and "failed" in err and "01_good" not in err.split("failed:")[-1]
    assert "boom from 02_bad" in out  # the summary gives the notebook's own error

    # The good notebook ran with the parameters, in the notebooks folder, on this interpreter.
    facts = json.loads((project / "figures" / "01_good" / "facts.json").read_text())
    assert facts == {"profile": "smoke", "seeds": [0, 1], "cwd": str(nbdir), "executable": sys.executable}
    # ... and was executed in place: outputs kept, injected cell tagged for nbval to skip.
    good = nbformat.read(nbdir / "01_good.ipynb", as_version=4)
    assert any("wrote" in o.get("text", "") for o in good.cells[-1].outputs)
    injected = [c for c in good.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "nbval-skip" in injected[0].metadata.tags
    assert good.metadata.papermill.output_path == "01_good.ipynb"
    assert (nbdir / "01_good.ipynb").stat().st_mode == mode_before

    # The failing notebook's file is untouched; its partial run is kept under .failed/.
    assert (nbdir / "02_bad.ipynb").read_bytes() == bad_before
    failed = nbformat.read(nbdir / ".failed" / "02_bad.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in failed.cells if c.cell_type == "code" for o in c.outputs)
    assert other.read_bytes() == b"not touched"
    assert not [p for p in os.listdir(nbdir) if p.endswith(regen.RUNNING_SUFFIX)]

    report = json.loads((project / "results" / "smoke" / "regeneration.json").read_text())
    assert report["profile"] == "smoke"
    assert {k: v["status"] for k, v in report["notebooks"].items()} == {"01_good": "ok", "02_bad": "failed"}
    assert all(len(report["runs"][v["run"]]["machine"]) > 0 for v in report["notebooks"].values())
    if sys.platform.startswith("linux"):  # the kernel's own peak, not this (torch-laden) process's
        assert 10 < report["notebooks"]["01_good"]["peak_rss_mib"] < 400

    # Re-running only the failing one leaves the good notebook, its figure and its record as they were.
    good_bytes = (nbdir / "01_good.ipynb").read_bytes()
    facts_bytes = (project / "figures" / "01_good" / "facts.json").read_bytes()
    assert main(cli(project, "--profile", "smoke", "--only", "02")) == 1
    assert (nbdir / "01_good.ipynb").read_bytes() == good_bytes
    assert (project / "figures" / "01_good" / "facts.json").read_bytes() == facts_bytes
    assert (nbdir / "02_bad.ipynb").read_bytes() == bad_before
    report = json.loads((project / "results" / "smoke" / "regeneration.json").read_text())
    assert report["notebooks"]["01_good"]["status"] == "ok"
    assert report["notebooks"]["02_bad"]["status"] == "failed"


def test_only_selects_by_number_and_rejects_unknown(project, capsys):
    notebooks = regen.find_notebooks(project / "notebooks")
    assert [p.name for p in notebooks] == ["01_good.ipynb", "02_bad.ipynb"]
    assert [p.stem for p in regen.select_notebooks(notebooks, regen.parse_only("2"))] == ["02_bad"]
    assert [p.stem for p in regen.select_notebooks(notebooks, regen.parse_only("02,01"))] == ["01_good", "02_bad"]
    with pytest.raises(ValueError, match="available: 01, 02"):
        regen.select_notebooks(notebooks, regen.parse_only("01,07"))
    with pytest.raises(ValueError, match="notebook number"):
        regen.parse_only("one")

    assert main(cli(project, "--profile", "smoke", "--only", "07")) == 2  # before any kernel starts
    assert "available: 01, 02" in capsys.readouterr().err
    assert not (project / "results").exists()


def test_unknown_profile_is_rejected(project, capsys):
    with pytest.raises(ValueError, match="smoke, quick, paper"):
        regen.regenerate(profile="fast", notebooks_dir=project / "notebooks")
    assert main(cli(project, "--profile", "fast")) == 2
    assert "allowed values: smoke, quick, paper" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seeds"):
        regen.parse_seeds("0,x")
