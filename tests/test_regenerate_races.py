"""Races and edges of the regeneration transaction that a review found (2026-12-03): each test fails on the code
before its fix. A killed run of one profile is completed by a run of another that shares the results folder; two
runs of one profile do not revert each other's records; a signal that reaches another thread still waits for the
commit; a malformed journal does not stop a start; path scrubbing rewrites whole paths only."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from dann_study import regenerate as regen
from dann_study.__main__ import main


class Killed(BaseException):
    """Stands for SIGKILL in the middle of a commit: nothing after it runs."""


def _project(root: Path) -> dict[str, Path]:
    d = {"notebooks": root / "notebooks", "figures": root / "figures", "results": root / "results"}
    (d["figures"] / "01_a").mkdir(parents=True)
    (d["figures"] / "01_a" / "f.svg").write_text("old")
    (d["results"] / "smoke").mkdir(parents=True)
    (d["results"] / "smoke" / "01_a.jsonl").write_text("old")
    d["notebooks"].mkdir()
    (d["notebooks"] / "01_a.ipynb").write_text("old")
    return d


def _fake_notebook(d: dict[str, Path], writes: dict[str, str] | None = None):
    """A stand-in for ``run_notebook`` that stages a new notebook, figure and record the way it does."""
    def run(path, parameters, outputs, profile, progress=True, data_root=None, run_id=None):
        stem = Path(path).stem
        fig_stage, res_stage = (p / f"{regen.STAGING_PREFIX}{run_id}-{stem}"
                                for p in (outputs.figures, outputs.results))
        (fig_stage / stem).mkdir(parents=True)
        (fig_stage / stem / "f.svg").write_text("new")
        import shutil
        shutil.copytree(outputs.results / profile, res_stage / profile)  # the copy made for reading
        copied = regen.digests(res_stage)
        for name, text in (writes or {f"{stem}.jsonl": "new"}).items():
            (res_stage / profile / name).write_text(text)
        executed = outputs.notebooks / f".{stem}.{run_id}{regen.RUNNING_SUFFIX}"
        executed.write_text("new")
        plan = regen._plan_commit(executed, outputs.notebooks / Path(path).name, fig_stage, outputs.figures,
                                  res_stage, outputs.results, copied)
        return regen.NotebookRun(stem, "ok", 0.0), plan
    return run


def _args(d, *extra):
    return ["regenerate", "--notebooks-dir", str(d["notebooks"]), "--figures-dir", str(d["figures"]),
            "--results-dir", str(d["results"]), "--profile", "smoke", "--in-place", "--no-sweep", "--no-progress",
            *extra]


def test_a_run_killed_mid_commit_is_completed_by_a_run_of_another_profile(tmp_path, monkeypatch):
    d = _project(tmp_path)
    real_apply = regen._apply_commit

    def apply_then_die(plan):  # the record moves, then the process is killed
        for src, dst in plan["files"]:
            os.replace(src, dst)
        raise Killed

    monkeypatch.setattr(regen, "run_notebook", _fake_notebook(d))
    monkeypatch.setattr(regen, "_apply_commit", apply_then_die)
    with pytest.raises(Killed):
        main(_args(d))
    monkeypatch.setattr(regen, "_apply_commit", real_apply)
    # another profile's run: its own notebooks and figures folders, the same results folder
    other = {"notebooks": tmp_path / "other" / "notebooks", "figures": tmp_path / "other" / "figures"}
    regen.clean_stale([other["notebooks"]], [other["figures"], d["results"]])
    assert (d["results"] / "smoke" / "01_a.jsonl").read_text() == "new"
    assert (d["figures"] / "01_a" / "f.svg").read_text() == "new"  # rolled forward, not left half new
    assert (d["notebooks"] / "01_a.ipynb").read_text() == "new"


def test_a_run_commits_the_records_it_wrote_not_the_copies_it_read(tmp_path, monkeypatch):
    d = _project(tmp_path)
    (d["results"] / "smoke" / "05_b.jsonl").write_text("v1")
    fake = _fake_notebook(d)

    def run_while_another_commits(*args, **kwargs):
        result = fake(*args, **kwargs)
        (d["results"] / "smoke" / "05_b.jsonl").write_text("v2")  # another run of 05 commits meanwhile
        return result

    monkeypatch.setattr(regen, "run_notebook", run_while_another_commits)
    assert main(_args(d)) == 0
    assert (d["results"] / "smoke" / "05_b.jsonl").read_text() == "v2"  # not reverted to the copy read
    assert (d["results"] / "smoke" / "01_a.jsonl").read_text() == "new"


def test_a_signal_that_reaches_another_thread_waits_for_the_commit():
    events, stop = [], threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)  # as tqdm's monitor thread
    thread.start()

    def handler(signum, frame):
        events.append("handler")
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with regen._signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
                events.append("commit done")
    finally:
        signal.signal(signal.SIGINT, old)
        stop.set()
    assert events == ["commit done", "handler"]


def test_a_malformed_journal_is_removed_not_a_crash(tmp_path):
    nbdir, figs, res = (tmp_path / n for n in ("notebooks", "figures", "results"))
    for folder in (nbdir, figs, res):
        folder.mkdir()
    journal = res / f".01_a.{regen.transaction.new_run_id()}{regen.JOURNAL_SUFFIX}"
    journal.write_text(json.dumps({"files": []}))  # no "notebook" entry
    regen.clean_stale([nbdir], [figs, res])
    assert not journal.exists()


def test_path_scrubbing_rewrites_whole_paths_not_the_tail_of_another():
    rules = regen.path_replacements([("/home/alice", "~"), ("/work/main", "..")])

    def scrub(text):
        for pattern, replacement in rules:
            text = pattern.sub(replacement, text)
        return text

    assert scrub("/mnt/backup/home/alice/x.csv and /srv/work/main/results") == \
        "/mnt/backup/home/alice/x.csv and /srv/work/main/results"
    assert scrub("saved to /home/alice/x.csv, see /work/main/results") == "saved to ~/x.csv, see ../results"


def test_a_lock_file_unlinked_before_it_was_locked_is_made_again(tmp_path, monkeypatch):
    import fcntl
    real_flock, unlinked = fcntl.flock, []

    def flock_after_a_cleanup(fh, op):  # another run's clean_stale unlinks the file between open and flock, once
        if not unlinked:
            unlinked.append(fh.name)
            os.unlink(fh.name)
        return real_flock(fh, op)

    monkeypatch.setattr(regen.transaction.fcntl, "flock", flock_after_a_cleanup)
    with regen.RunLock([tmp_path]) as lock:
        path = regen.transaction._lock_path(tmp_path, lock.id)
        assert unlinked == [str(path)] and path.is_file()  # the lock is held on a file that has its name
        monkeypatch.setattr(regen.transaction.fcntl, "flock", real_flock)
        with open(path) as fh, pytest.raises(BlockingIOError):
            real_flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_08_reads_the_other_notebooks_runs_on_the_seeds_asked_for():
    from dann_study.plan import plan
    p = plan("08", "paper", [5, 6, 7])
    read_again = [r for r in p.runs if r.tags.get("diagnosis") in ("baselines", "adda_gan_decay", "adda_stage2")]
    assert read_again and {r.spec.seed for r in read_again} <= {5, 6, 7}
    assert any(r.tags.get("diagnosis") == "iimt_network" for r in p.runs)
    assert {r.spec.key for r in p.runs if r.tags.get("diagnosis") == "baselines"} <= \
        {r.spec.key for n in ("05", "06") for r in plan(n, "paper", [5, 6, 7]).runs}


def test_sweep_refuses_a_data_root_that_is_not_a_folder(tmp_path, capsys):
    assert main(["sweep", "--profile", "smoke", "--only", "03", "--data-root", str(tmp_path / "absent"),
                 "--store", str(tmp_path / "runs")]) == 2
    assert "--data-root" in capsys.readouterr().err and not (tmp_path / "runs").exists()
