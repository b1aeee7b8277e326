"""dann_study.regenerate on tiny synthetic notebooks: execution, failure isolation, --only
selection and argument errors. The helpers here (``make_notebook``, ``write_project``,
``generation_of``) are shared with tests/test_regenerate_*.py."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

from dann_study import regenerate as regen
from dann_study.__main__ import main

# The same parameters cell as the real notebooks: paths come from the environment.
PARAMETERS = """\
import os
profile = os.environ.get("DANNLIB_PROFILE", "unset")
seeds = None
figures_dir = os.environ.get("DANNLIB_FIGURES", "../figures")
results_dir = os.environ.get("DANNLIB_RESULTS", "../results")
data_root = None
"""

GOOD = """\
import json, os, sys
from pathlib import Path
out = Path(figures_dir, "01_good", "facts.json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"profile": profile, "seeds": seeds, "cwd": os.getcwd(),
                           "executable": sys.executable, "data": os.environ.get("DANNLIB_DATA"),
                           "progress": os.environ.get("DANNLIB_PROGRESS")}))
print("wrote", out)
"""

BAD = 'raise RuntimeError("boom from 02_bad")\n'

# A notebook that writes a figure and a record stamped with $REGEN_TEST_GEN, then (only when
# $REGEN_TEST_MARKER is set) writes its kernel's pid to that file and sleeps until killed.
STAMPED = """\
import json, os, time
from pathlib import Path
gen = os.environ.get("REGEN_TEST_GEN", "unset")
figure = Path(figures_dir, "{name}", "figure.svg")
figure.parent.mkdir(parents=True, exist_ok=True)
figure.write_text("<svg>" + gen + "</svg>")
record = Path(results_dir, profile, "{name}.jsonl")
record.parent.mkdir(parents=True, exist_ok=True)
record.write_text(json.dumps({{"notebook": "{name}", "gen": gen}}) + "\\n")
print("generation", gen)
"""
SLEEPER = """\
marker = os.environ.get("REGEN_TEST_MARKER")
if marker:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(3600)
"""


def make_notebook(path: Path, *bodies: str) -> None:
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {path.stem}"), params,
                                         *[nbformat.v4.new_code_cell(b) for b in bodies]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def write_stamped_project(root: Path) -> Path:
    """root/notebooks/{01_first,02_sleepy}.ipynb: both write a stamped figure and record;
    02_sleepy then sleeps when $REGEN_TEST_MARKER is set."""
    nbdir = root / "notebooks"
    nbdir.mkdir(parents=True)
    make_notebook(nbdir / "01_first.ipynb", STAMPED.format(name="01_first"))
    make_notebook(nbdir / "02_sleepy.ipynb", STAMPED.format(name="02_sleepy"), SLEEPER)
    return root


def generation_of(root: Path, stem: str, profile: str = "smoke") -> dict:
    """The generation stamp of a notebook's executed file, figure and record (None where
    absent or not stamped)."""
    nb_gen = None
    nb_path = root / "notebooks" / f"{stem}.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "")
            if text.startswith("generation "):
                nb_gen = text.split()[1]
    figure = root / "figures" / stem / "figure.svg"
    record = root / "results" / profile / f"{stem}.jsonl"
    return {
        "notebook": nb_gen,
        "figure": figure.read_text()[len("<svg>"):-len("</svg>")] if figure.exists() else None,
        "record": json.loads(record.read_text())["gen"] if record.exists() else None,
    }


def cli_args(project: Path, *extra: str) -> list[str]:
    return ["regenerate", "--notebooks-dir", str(project / "notebooks"), "--figures-dir",
            str(project / "figures"), "--results-dir", str(project / "results"), "--no-progress", *extra]


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


cli = cli_args


@pytest.mark.slow
def test_good_runs_in_place_and_failure_is_isolated(project, capsys, monkeypatch):
    monkeypatch.delenv("DANNLIB_DATA", raising=False)
    nbdir = project / "notebooks"
    bad_before = (nbdir / "02_bad.ipynb").read_bytes()
    mode_before = (nbdir / "01_good.ipynb").stat().st_mode
    other = project / "figures" / "09_other" / "figure.png"
    data = project / "data"
    data.mkdir()

    assert main(cli(project, "--profile", "smoke", "--in-place", "--seeds", "0,1", "--data-root", str(data))) == 1
    out, err = capsys.readouterr()
    assert "02_bad" in err and "failed" in err and "01_good" not in err.split("failed:")[-1]
    assert "boom from 02_bad" in out  # the summary gives the notebook's own error

    # The good notebook ran with the parameters, in the notebooks folder, on this interpreter,
    # with the data root and "no progress bars" in its environment.
    facts = json.loads((project / "figures" / "01_good" / "facts.json").read_text())
    assert facts == {"profile": "smoke", "seeds": [0, 1], "cwd": str(nbdir), "executable": sys.executable,
                     "data": str(data), "progress": "0"}
    # ... and was executed in place: outputs kept, injected cell tagged for nbval to skip and
    # holding no path, the printed staging path rewritten to the final folder, relative.
    good = nbformat.read(nbdir / "01_good.ipynb", as_version=4)
    assert [o["text"] for o in good.cells[-1].outputs] == ["wrote ../figures/01_good/facts.json\n"]
    injected = [c for c in good.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "nbval-skip" in injected[0].metadata.tags
    assert injected[0].get("id") in (None, "injected-parameters")  # not papermill's random id
    # it records the parameters as comments and assigns nothing (Run All in JupyterLab takes the
    # parameters cell, so $DANNLIB_PROFILE is honoured)
    src = injected[0].source
    assert "profile = 'smoke'" in src and "seeds = [0, 1]" in src
    assert all(line.startswith("#") for line in src.splitlines())
    assert good.metadata.papermill.output_path == "01_good.ipynb"
    assert good.metadata.papermill.parameters == {"profile": "smoke", "seeds": [0, 1]}
    assert (nbdir / "01_good.ipynb").stat().st_mode == mode_before

    # The failing notebook's file is untouched; its partial run is kept under .failed/.
    assert (nbdir / "02_bad.ipynb").read_bytes() == bad_before
    failed = nbformat.read(nbdir / ".failed" / "02_bad.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in failed.cells if c.cell_type == "code" for o in c.outputs)
    assert other.read_bytes() == b"not touched"
    leftovers = [p for d in (nbdir, project / "figures", project / "results") for p in os.listdir(d)
                 if p.endswith(regen.RUNNING_SUFFIX) or p.startswith(regen.STAGING_PREFIX)]
    assert leftovers == []

    report = json.loads((project / "results" / "smoke" / "regeneration.json").read_text())
    assert report["profile"] == "smoke"
    assert {k: v["status"] for k, v in report["notebooks"].items()} == {"01_good": "ok", "02_bad": "failed"}
    assert report["notebooks"]["02_bad"]["last_ok"] is None
    assert all(len(report["runs"][v["run"]]["machine"]) > 0 for v in report["notebooks"].values())
    assert str(project) not in json.dumps(report)  # no machine paths in the report
    if sys.platform.startswith("linux"):  # the kernel's own peak, not this (torch-laden) process's
        assert 10 < report["notebooks"]["01_good"]["peak_rss_mib"] < 400

    # Re-running only the failing one leaves the good notebook, its figure and its record as they were.
    good_bytes = (nbdir / "01_good.ipynb").read_bytes()
    facts_bytes = (project / "figures" / "01_good" / "facts.json").read_bytes()
    assert main(cli(project, "--profile", "smoke", "--in-place", "--only", "02")) == 1
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


def test_help_names_the_profiles_rule_and_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["regenerate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"only the profile the committed notebooks carry ('{regen.COMMITTED_PROFILE}'" in text
    assert ".tmp/<profile>/notebooks/" in text and ".tmp/<profile>/figures/" in text and "--in-place" in text
    assert "130 interrupted by SIGINT" in text and "143 by SIGTERM" in text
    assert "DANNLIB_PROGRESS=0" in text
