"""A reused process id never mixes outputs (issue 24): a regeneration killed before or
during its commit, whose recorded pid is that of a live process (a container restarted in a
fresh PID namespace gets the same low pid again), is recognised as dead because nobody holds
its lock, and the next run rolls its notebook back (no journal yet) or forward (journal
written), so the notebook, its figures and its records are entirely old or entirely new and
no staging folder, journal, executed-notebook temporary or lock file remains."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from dann_study import regenerate as regen
from dann_study.__main__ import main


def _old_project(root: Path) -> dict[str, Path]:
    nbdir, figs, res = root / "notebooks", root / "figures", root / "results"
    (figs / "01_a").mkdir(parents=True)
    (figs / "01_a" / "f.svg").write_text("old")
    (figs / "01_a" / "gone.svg").write_text("old")
    (res / "smoke").mkdir(parents=True)
    (res / "smoke" / "01_a.jsonl").write_text("old")
    nbdir.mkdir()
    (nbdir / "01_a.ipynb").write_text("old")
    return {"notebooks": nbdir, "figures": figs, "results": res}


def _dead_run(d: dict[str, Path], owner: str, phase: str) -> None:
    """What a run named ``owner`` leaves when SIGKILLed: its staged outputs ("new"); with
    phase "mid-commit" also its journal, the record already moved, the figures and notebook
    not yet; its lock files (run ids only) stay behind, held by nobody."""
    nbdir, figs, res = d["notebooks"], d["figures"], d["results"]
    fig_stage, res_stage = figs / f"{regen.STAGING_PREFIX}{owner}-01_a", res / f"{regen.STAGING_PREFIX}{owner}-01_a"
    (fig_stage / "01_a").mkdir(parents=True)
    (fig_stage / "01_a" / "f.svg").write_text("new")
    (res_stage / "smoke").mkdir(parents=True)
    (res_stage / "smoke" / "01_a.jsonl").write_text("new")
    executed = nbdir / f".01_a.{owner}{regen.RUNNING_SUFFIX}"
    executed.write_text("new")
    if "-" in owner:
        for folder in d.values():
            (folder / f"{regen.transaction.RUN_LOCK_PREFIX}{owner}{regen.transaction.RUN_LOCK_SUFFIX}").write_text("")
    if phase == "mid-commit":
        plan = regen._plan_commit(executed, nbdir / "01_a.ipynb", fig_stage, figs, res_stage, res)
        for src, dst in plan["files"]:  # the record was moved before the kill
            os.replace(src, dst)
        (nbdir / f".01_a.{owner}{regen.JOURNAL_SUFFIX}").write_text(json.dumps(plan))


def _generation(d: dict[str, Path]) -> dict:
    figs = d["figures"] / "01_a"
    return {"notebook": (d["notebooks"] / "01_a.ipynb").read_text(),
            "figures": {p.name: p.read_text() for p in sorted(figs.iterdir())},
            "record": (d["results"] / "smoke" / "01_a.jsonl").read_text()}


OLD = {"notebook": "old", "figures": {"f.svg": "old", "gone.svg": "old"}, "record": "old"}
NEW = {"notebook": "new", "figures": {"f.svg": "new"}, "record": "new"}


@pytest.mark.parametrize("naming", ["run id", "pid only"])
@pytest.mark.parametrize("phase, expected", [("before-commit", OLD), ("mid-commit", NEW)])
def test_a_dead_run_with_a_reused_pid_is_recovered(naming, phase, expected, tmp_path, monkeypatch):
    d = _old_project(tmp_path)
    pid = os.getpid()  # the dead run's pid is a live process's: this one, the next run
    owner = f"{pid}-{uuid.uuid4().hex[:16]}" if naming == "run id" else str(pid)
    _dead_run(d, owner, phase)

    started = []

    def later_run(path, *args, run_id=None, **kwargs):
        started.append(run_id)
        return regen.NotebookRun(Path(path).stem, "ok", 0.0), None

    monkeypatch.setattr(regen, "run_notebook", later_run)
    assert main(["regenerate", "--notebooks-dir", str(d["notebooks"]), "--figures-dir", str(d["figures"]),
                 "--results-dir", str(d["results"]), "--profile", "smoke", "--in-place", "--no-sweep",
                 "--no-progress"]) == 0
    assert _generation(d) == expected
    left = sorted(p.name for folder in d.values() for p in folder.iterdir() if p.name.startswith("."))
    assert left == [], left
    assert len(started) == 1 and started[0] != owner and started[0].startswith(f"{pid}-")


def test_a_live_run_is_left_alone_whatever_its_pid(tmp_path):
    """A run that holds its lock is live even where its pid names another process."""
    d = _old_project(tmp_path)
    with regen.RunLock(list(d.values()), run_id=f"1-{uuid.uuid4().hex[:16]}") as live:
        _dead_run(d, live.id, "before-commit")
        staged = sorted(p for folder in d.values() for p in folder.iterdir() if p.name.startswith("."))
        assert regen.clean_stale([d["notebooks"]], [d["figures"], d["results"]]) == []
        assert sorted(p for folder in d.values() for p in folder.iterdir() if p.name.startswith(".")) == staged
    assert _generation(d) == OLD
