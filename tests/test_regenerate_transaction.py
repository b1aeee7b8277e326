"""regenerate as a transaction, in-process: a failing notebook leaves the old figures and
records; the report keeps the last success beside a failure; stale leftovers and
unfinished commits are handled at start; output folders are checked before any kernel
starts; profiles other than COMMITTED_PROFILE write under .tmp/<profile>/; saved notebooks
are tidied of machine paths and known stderr noise."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from dann_study import regenerate as regen
from dann_study.__main__ import main
from test_regenerate import STAMPED, cli_args, generation_of, make_notebook


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _old_outputs(root: Path, stem: str) -> None:
    """An earlier successful run's figure and record (stamped "old") and its report entry,
    in the format of the previous version (no last_ok)."""
    fig = root / "figures" / stem / "figure.svg"
    fig.parent.mkdir(parents=True)
    fig.write_text("<svg>old</svg>")
    (root / "figures" / stem / "only_in_old.png").write_bytes(b"old")
    rec = root / "results" / "smoke" / f"{stem}.jsonl"
    rec.parent.mkdir(parents=True)
    rec.write_text(json.dumps({"notebook": stem, "gen": "old"}) + "\n")
    (root / "results" / "smoke" / "regeneration.json").write_text(json.dumps({
        "profile": "smoke",
        "notebooks": {stem: {"notebook": stem, "status": "ok", "seconds": 1.0, "run": "2020-01-01T00:00:00+00:00"}},
        "runs": {"2020-01-01T00:00:00+00:00": {"started_at": "2020-01-01T00:00:00+00:00"}},
    }))


@pytest.mark.slow
def test_a_failing_notebook_leaves_old_figures_records_and_keeps_last_ok(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REGEN_TEST_GEN", "new")
    nb = tmp_path / "notebooks" / "01_half.ipynb"
    nb.parent.mkdir()
    # Writes its figure and record (into staging), then fails.
    make_notebook(nb, STAMPED.format(name="01_half"), 'raise RuntimeError("after writing")')
    _old_outputs(tmp_path, "01_half")
    source = nb.read_bytes()

    assert main(cli_args(tmp_path, "--profile", "smoke", "--in-place")) == 1
    assert "after writing" in capsys.readouterr().out
    assert nb.read_bytes() == source
    assert (tmp_path / "figures" / "01_half" / "figure.svg").read_text() == "<svg>old</svg>"
    assert (tmp_path / "figures" / "01_half" / "only_in_old.png").read_bytes() == b"old"
    assert json.loads((tmp_path / "results" / "smoke" / "01_half.jsonl").read_text())["gen"] == "old"
    assert sorted(os.listdir(tmp_path / "figures")) == ["01_half"]  # no staging left
    assert sorted(os.listdir(tmp_path / "results")) == ["smoke"]

    report = json.loads((tmp_path / "results" / "smoke" / "regeneration.json").read_text())
    entry = report["notebooks"]["01_half"]
    assert entry["status"] == "failed" and "after writing" in entry["error"]
    assert entry["last_ok"]["status"] == "ok" and entry["last_ok"]["run"] == "2020-01-01T00:00:00+00:00"
    assert set(report["runs"]) == {"2020-01-01T00:00:00+00:00", entry["run"]}

    # Fixed, it succeeds: the figure folder is replaced as a whole, the record replaced.
    make_notebook(nb, STAMPED.format(name="01_half"))
    assert main(cli_args(tmp_path, "--profile", "smoke", "--in-place")) == 0
    assert generation_of(tmp_path, "01_half") == {"notebook": "new", "figure": "new", "record": "new"}
    assert sorted(os.listdir(tmp_path / "figures" / "01_half")) == ["figure.svg"]
    entry = json.loads((tmp_path / "results" / "smoke" / "regeneration.json").read_text())["notebooks"]["01_half"]
    assert entry["status"] == "ok" and entry["last_ok"]["run"] == entry["run"]


@pytest.mark.slow
def test_other_profiles_write_under_dot_tmp_and_records_to_results(tmp_path, monkeypatch):
    monkeypatch.delenv("DANNLIB_FIGURES", raising=False)
    monkeypatch.delenv("DANNLIB_RESULTS", raising=False)
    monkeypatch.setenv("REGEN_TEST_GEN", "smoke-run")
    nb = tmp_path / "notebooks" / "01_first.ipynb"
    nb.parent.mkdir()
    make_notebook(nb, STAMPED.format(name="01_first"))
    source = nb.read_bytes()
    args = ["regenerate", "--notebooks-dir", str(tmp_path / "notebooks"), "--results-dir",
            str(tmp_path / "results"), "--no-progress", "--profile", "smoke"]
    assert main(args) == 0
    assert nb.read_bytes() == source  # the committed notebook is not the smoke run's
    executed = tmp_path / ".tmp" / "smoke" / "notebooks" / "01_first.ipynb"
    assert "generation smoke-run" in executed.read_text()
    assert (tmp_path / ".tmp" / "smoke" / "figures" / "01_first" / "figure.svg").read_text() == "<svg>smoke-run</svg>"
    assert json.loads((tmp_path / "results" / "smoke" / "01_first.jsonl").read_text())["gen"] == "smoke-run"
    assert not (tmp_path / "figures").exists()
    report = json.loads((tmp_path / "results" / "smoke" / "regeneration.json").read_text())
    run = next(iter(report["runs"].values()))
    assert run["in_place"] is False
    assert run["outputs"] == {"notebooks": ".tmp/smoke/notebooks", "figures": ".tmp/smoke/figures",
                              "results": "results"}


def test_only_the_committed_profile_is_in_place_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("DANNLIB_FIGURES", raising=False)
    monkeypatch.delenv("DANNLIB_RESULTS", raising=False)  # make test sets it; the defaults are what is tested
    assert regen.COMMITTED_PROFILE == "paper"
    nbdir = tmp_path / "notebooks"
    paper = regen.resolve_outputs("paper", nbdir)
    assert paper.in_place and paper.notebooks == nbdir and paper.figures == regen.PROJECT_ROOT / "figures"
    for profile in ("smoke", "quick"):
        out = regen.resolve_outputs(profile, nbdir)
        assert not out.in_place
        assert out.notebooks == tmp_path / ".tmp" / profile / "notebooks"
        assert out.figures == tmp_path / ".tmp" / profile / "figures"
        assert out.results == regen.PROJECT_ROOT / "results"
        forced = regen.resolve_outputs(profile, nbdir, in_place=True)
        assert forced.in_place and forced.notebooks == nbdir and forced.figures == regen.PROJECT_ROOT / "figures"
    monkeypatch.setenv("DANNLIB_FIGURES", str(tmp_path / "elsewhere"))
    assert regen.resolve_outputs("quick", nbdir).figures == tmp_path / "elsewhere"


def test_unwritable_output_folders_are_named_with_their_option(tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    with pytest.raises(PermissionError, match=r"plain-file/figures cannot be created: .*plain-file is not a folder; "
                                              r"change it with --figures-dir"):
        regen.check_writable(a_file / "figures", "--figures-dir")

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    make_notebook(nbdir / "01_x.ipynb", "print(1)")
    # Root ignores permission bits: a real mkstemp failure is simulated for the results folder.
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == tmp_path / "ro":
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    started = []
    monkeypatch.setattr(regen, "run_notebook", lambda *a, **k: started.append(a))
    assert main(["regenerate", "--notebooks-dir", str(nbdir), "--figures-dir", str(tmp_path / "f"),
                 "--results-dir", str(tmp_path / "ro"), "--profile", "smoke", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"output folder {tmp_path / 'ro'} is not writable" in err and "--results-dir or $DANNLIB_RESULTS" in err
    assert main(["regenerate", "--notebooks-dir", str(nbdir), "--figures-dir", str(a_file / "f"),
                 "--results-dir", str(tmp_path / "r"), "--profile", "smoke", "--no-progress"]) == 2
    assert "--figures-dir or $DANNLIB_FIGURES" in capsys.readouterr().err
    assert started == []  # no notebook started


def test_stale_leftovers_are_removed_and_live_ones_kept(tmp_path):
    nbdir, figs, res = tmp_path / "notebooks", tmp_path / "figures", tmp_path / "results"
    for d in (nbdir, figs, res):
        d.mkdir()
    # Live: a run holding its lock (here this process). Stale: a run whose lock file is left
    # but not held, a run without a lock file, and an older version's pid-only names.
    live = regen.RunLock([nbdir, figs, res])
    dead = regen.transaction.new_run_id()
    for folder in (nbdir, figs):
        regen.transaction._lock_path(folder, dead).write_text("")  # left by a killed run, not held
    old_pid = _dead_pid()
    stale = [nbdir / f".01_a.{dead}{regen.RUNNING_SUFFIX}", nbdir / f".02_b.k3x9_q{regen.RUNNING_SUFFIX}",
             figs / f"{regen.STAGING_PREFIX}{dead}-01_a", res / f"{regen.STAGING_PREFIX}{dead}-01_a",
             nbdir / f".01_a.{old_pid}{regen.RUNNING_SUFFIX}", figs / f"{regen.STAGING_PREFIX}{old_pid}-01_a",
             nbdir / f".01_a.{os.getpid()}{regen.RUNNING_SUFFIX}"]
    kept = [nbdir / f".01_a.{live.id}{regen.RUNNING_SUFFIX}", figs / f"{regen.STAGING_PREFIX}{live.id}-01_a",
            nbdir / "01_a.ipynb", figs / "01_a"]
    for p in stale + kept:
        if p.suffix == ".ipynb":
            p.write_text("{}")
        else:
            (p / "sub").mkdir(parents=True)
    try:
        removed = regen.clean_stale([nbdir], [figs, res])
        assert sorted(removed) == sorted(stale)
        assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
        locks = sorted(p.name for d in (nbdir, figs, res) for p in d.glob(f"{regen.transaction.RUN_LOCK_PREFIX}*"))
        tx = regen.transaction
        assert locks == [f"{tx.RUN_LOCK_PREFIX}{live.id}{tx.RUN_LOCK_SUFFIX}"] * 3  # the dead run's went
    finally:
        live.close()
    assert not [p for d in (nbdir, figs, res) for p in d.glob(f"{regen.transaction.RUN_LOCK_PREFIX}*")]


def test_an_unfinished_commit_is_completed_at_start(tmp_path):
    """A commit cut short (SIGKILL after the journal was written) is replayed: all new."""
    nbdir, figs, res = tmp_path / "notebooks", tmp_path / "figures", tmp_path / "results"
    dead = _dead_pid()
    fig_stage, res_stage = figs / f"{regen.STAGING_PREFIX}{dead}-01_a", res / f"{regen.STAGING_PREFIX}{dead}-01_a"
    (fig_stage / "01_a").mkdir(parents=True)
    (fig_stage / "01_a" / "f.svg").write_text("new")
    (res_stage / "smoke").mkdir(parents=True)
    (res_stage / "smoke" / "01_a.jsonl").write_text("new")
    (figs / "01_a").mkdir(parents=True)
    (figs / "01_a" / "f.svg").write_text("old")
    (figs / "01_a" / "gone.svg").write_text("old")
    nbdir.mkdir()
    (nbdir / "01_a.ipynb").write_text("old")
    executed = nbdir / f".01_a.{dead}{regen.RUNNING_SUFFIX}"
    executed.write_text("new")
    plan = regen._plan_commit(executed, nbdir / "01_a.ipynb", fig_stage, figs, res_stage, res)
    # The record was moved before the kill; the figures and notebook were not.
    regen._apply_commit({"notebook": [str(tmp_path / "absent"), str(tmp_path / "absent2")], "files": plan["files"]})
    (nbdir / f".01_a.{dead}{regen.JOURNAL_SUFFIX}").write_text(json.dumps(plan))

    regen.clean_stale([nbdir], [figs, res])
    assert (nbdir / "01_a.ipynb").read_text() == "new"
    assert sorted(os.listdir(figs / "01_a")) == ["f.svg"] and (figs / "01_a" / "f.svg").read_text() == "new"
    assert (res / "smoke" / "01_a.jsonl").read_text() == "new"
    assert sorted(os.listdir(nbdir)) == ["01_a.ipynb"] and os.listdir(figs) == ["01_a"] and os.listdir(res) == ["smoke"]


TQDM_WARNING = ("/some/venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found. "
                "Please update jupyter and ipywidgets. See https://ipywidgets.readthedocs.io/en/stable/user_install.html\n"
                "  from .autonotebook import tqdm as notebook_tqdm\n")


def test_tidy_drops_known_noise_only_and_rewrites_machine_paths(tmp_path):
    stage = tmp_path / "figures" / f"{regen.STAGING_PREFIX}1-01_a"
    rules = regen.path_replacements([(stage, "../figures"), (tmp_path, ".."), ("/data/root", "$DANNLIB_DATA")])

    def stream(name, text):
        return nbformat.v4.new_output("stream", name=name, text=text)

    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        stream("stderr", TQDM_WARNING),
        stream("stderr", "\rtraining:  14%|█▎        | 27/200 [00:01<00:06, 26.34it/s]"),
        stream("stderr", "\r                                  "),
        stream("stderr", "UserWarning: something real\n"),
        stream("stderr", "50%| is not a bar without a carriage return\n"),
        stream("stdout", f"wrote {stage}/01_a/f.png and {tmp_path}/results/x.jsonl from /data/root/MNIST; "
                         f"{tmp_path}2 stays\n"),
    ]
    injected = nbformat.v4.new_code_cell('# Parameters\nprofile = "smoke"\n')
    injected.metadata["tags"] = ["injected-parameters"]
    nb = nbformat.v4.new_notebook(cells=[injected, cell])
    nb.metadata["papermill"] = {"input_path": "/abs/in.ipynb", "output_path": "/abs/.x.running.ipynb",
                                "parameters": {"profile": "smoke", "figures_dir": "/abs/figures"}}
    regen.tidy_notebook(nb, "01_a.ipynb", {"profile": "smoke"}, rules)
    assert [o["text"] for o in nb.cells[1].outputs] == [
        "UserWarning: something real\n",
        "50%| is not a bar without a carriage return\n",
        f"wrote ../figures/01_a/f.png and ../results/x.jsonl from $DANNLIB_DATA/MNIST; {tmp_path}2 stays\n",
    ]
    assert nb.metadata.papermill == {"input_path": "01_a.ipynb", "output_path": "01_a.ipynb",
                                     "parameters": {"profile": "smoke"}}
    assert nb.cells[0].metadata.tags == ["injected-parameters", "nbval-skip"]


def test_the_from_scratch_regeneration_and_its_wall_time_outlive_renders(tmp_path):
    """``from_scratch`` keeps the last regeneration that trained every run and executed every
    notebook (its wall_seconds is what ``make figures`` costs from an empty store); a later
    render from the store, a partial one or a failed one does not replace it."""
    from dann_study.regenerate import write_report

    path = tmp_path / "quick" / "regeneration.json"
    nbs = ["01_a", "02_b"]

    def regeneration(start, found, trained, wall, statuses=("ok", "ok"), notebooks=nbs):
        info = {"started_at": start, "sweep": {"total": found + trained, "found": found, "trained": trained,
                                               "failed": 0}, "wall_seconds": wall}
        runs = [regen.NotebookRun(n, s, 1.0) for n, s in zip(notebooks, statuses)]
        return json.loads(write_report(path, "quick", runs, info).read_text())

    assert regeneration("2026-01-01T00:00:00", 3, 0, 10.0)["from_scratch"] is None  # found runs: a render
    scratch = regeneration("2026-01-02T00:00:00", 0, 3, 1234.5)["from_scratch"]
    assert scratch["wall_seconds"] == 1234.5 and scratch["started_at"] == "2026-01-02T00:00:00"
    after = regeneration("2026-01-03T00:00:00", 3, 0, 12.0)  # a later render: scratch kept
    assert after["from_scratch"] == scratch
    assert "2026-01-02T00:00:00" not in after["runs"], "the runs log keeps only referenced runs"
    # a failed notebook or a regeneration of some notebooks only is not a from-scratch run
    assert regeneration("2026-01-04T00:00:00", 0, 3, 99.0, ("ok", "failed"))["from_scratch"] == scratch
    assert regeneration("2026-01-05T00:00:00", 0, 1, 5.0, ("ok",), nbs[:1])["from_scratch"] == scratch
    assert regeneration("2026-01-06T00:00:00", 0, 3, 77.0)["from_scratch"]["wall_seconds"] == 77.0
    # a report written before from_scratch existed: its scratch run is found before a render replaces it
    old = json.loads(path.read_text())
    del old["from_scratch"]
    path.write_text(json.dumps(old))
    assert regeneration("2026-01-07T00:00:00", 3, 0, 12.0)["from_scratch"]["wall_seconds"] == 77.0


def test_the_commit_plan_moves_only_records_the_notebook_changed(tmp_path):
    """A staged record equal to the live one, or left as the copy made for reading, is not moved (the live file may
    be newer, another run's commit); a changed or new one is."""
    figs, res, fig_stage, res_stage = (tmp_path / n for n in ("figures", "results", "fig_stage", "res_stage"))
    for folder in (figs, res / "smoke", fig_stage, res_stage / "smoke"):
        folder.mkdir(parents=True)
    for name, live, staged in (("same.jsonl", "x", "x"), ("read.jsonl", "newer", "old"), ("changed.jsonl", "a", "b")):
        (res / "smoke" / name).write_text(live)
        (res_stage / "smoke" / name).write_text(staged)
    (res_stage / "smoke" / "new.jsonl").write_text("n")
    copied = regen.digests(res_stage)
    (res_stage / "smoke" / "changed.jsonl").write_text("c")  # written by the notebook after the copy
    plan = regen._plan_commit(tmp_path / "run.ipynb", tmp_path / "nb.ipynb", fig_stage, figs, res_stage, res, copied)
    assert sorted(Path(src).name for src, _ in plan["files"]) == ["changed.jsonl"]
    plan = regen._plan_commit(tmp_path / "run.ipynb", tmp_path / "nb.ipynb", fig_stage, figs, res_stage, res)
    assert sorted(Path(src).name for src, _ in plan["files"]) == ["changed.jsonl", "new.jsonl", "read.jsonl"]
