"""Kill tests: ``python -m dann_study regenerate`` as a subprocess on two small notebooks,
stopped by SIGINT, SIGTERM or SIGKILL while the second one runs. Every notebook, figure
and record is then either the old one or the new one, never a mix, and a rerun completes.

The old state (every output stamped "old") is made once per module; each test works on a
copy of it. The running regenerate is stamped "new"; notebook 02 tells the test its
kernel's pid through a marker file and sleeps until killed. No test has a time limit:
waiting loops end when the awaited thing happens or the process they wait on has exited."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from dann_study import regenerate as regen
from dann_study.__main__ import main
from test_regenerate import cli_args, generation_of, write_stamped_project

pytestmark = pytest.mark.slow


def _set_env(**values):
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    return old


@pytest.fixture(scope="module")
def old_state(tmp_path_factory):
    root = write_stamped_project(tmp_path_factory.mktemp("old"))
    saved = _set_env(REGEN_TEST_GEN="old", REGEN_TEST_MARKER=None)
    try:
        assert main(cli_args(root, "--profile", "smoke", "--in-place")) == 0
    finally:
        _set_env(**saved)
    for stem in ("01_first", "02_sleepy"):
        assert generation_of(root, stem) == {"notebook": "old", "figure": "old", "record": "old"}
    return root


@pytest.fixture
def project(old_state, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(old_state, root)
    return root


def _gone(pid: int) -> bool:
    """The process has exited (a zombie counts: nobody may have reaped the orphan yet)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return True


def _start_and_wait_for_02(project: Path) -> tuple[subprocess.Popen, int]:
    """Start regenerate (stamp "new") and return once notebook 02's kernel is sleeping."""
    marker = project / "marker"
    env = {**os.environ, "REGEN_TEST_GEN": "new", "REGEN_TEST_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "dann_study",
                             *cli_args(project, "--profile", "smoke", "--in-place")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (marker.exists() and marker.read_text().strip()):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"regenerate ended (status {proc.returncode}) before notebook 02 ran:\n{out}\n{err}")
        time.sleep(0.1)
    return proc, int(marker.read_text())


def _old_or_new(project: Path) -> dict:
    gens = {stem: generation_of(project, stem) for stem in ("01_first", "02_sleepy")}
    for stem, g in gens.items():
        assert len(set(g.values())) == 1, f"{stem} mixes generations: {g}"
    return {stem: g["notebook"] for stem, g in gens.items()}


def _leftovers(project: Path) -> list[str]:
    return sorted(p.name for d in ("notebooks", "figures", "results") for p in (project / d).iterdir()
                  if p.name.endswith(regen.RUNNING_SUFFIX) or p.name.endswith(regen.JOURNAL_SUFFIX)
                  or p.name.startswith(regen.STAGING_PREFIX) or p.name.startswith(regen.transaction.RUN_LOCK_PREFIX))


def _rerun_02(project: Path) -> None:
    saved = _set_env(REGEN_TEST_GEN="new", REGEN_TEST_MARKER=None)
    try:
        assert main(cli_args(project, "--profile", "smoke", "--in-place", "--only", "02")) == 0
    finally:
        _set_env(**saved)
    assert _old_or_new(project) == {"01_first": "new", "02_sleepy": "new"}
    assert _leftovers(project) == []


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_sigterm_keep_old_outputs_and_exit_cleanly(project, signum, status):
    old_02 = (project / "notebooks" / "02_sleepy.ipynb").read_bytes()
    old_report = json.loads((project / "results" / "smoke" / "regeneration.json").read_text())
    proc, kernel_pid = _start_and_wait_for_02(project)
    proc.send_signal(signum)
    out, err = proc.communicate()

    assert proc.returncode == status, err
    name = signal.Signals(signum).name
    # regenerate's own stderr is one line. Under load the kernel may log "[IPKernelApp] ERROR |
    # KeyboardInterrupt caught in kernel." when it is interrupted before regenerate kills it (a
    # race seen once in CI beside training runs): jupyter's line, not regenerate's, so left out here.
    ours = [line for line in err.strip().splitlines() if not line.startswith("[IPKernelApp]")]
    assert ours == [
        f"regenerate: interrupted by {name} during 02_sleepy (left as it was); "
        "1 notebook(s) finished before: 01_first"
    ]
    assert "Traceback" not in out + err
    assert _gone(kernel_pid)  # the kernel was killed, not left sleeping
    # 01 finished before the signal and is new throughout; 02 is old throughout.
    assert _old_or_new(project) == {"01_first": "new", "02_sleepy": "old"}
    assert (project / "notebooks" / "02_sleepy.ipynb").read_bytes() == old_02
    assert _leftovers(project) == []

    report = json.loads((project / "results" / "smoke" / "regeneration.json").read_text())
    entry = report["notebooks"]["02_sleepy"]
    assert entry["status"] == "interrupted" and entry["error"] == f"interrupted by {name}"
    # The success whose outputs are in place is still recorded beside the interruption.
    assert entry["last_ok"]["status"] == "ok"
    assert entry["last_ok"]["run"] == old_report["notebooks"]["02_sleepy"]["run"]
    assert entry["last_ok"]["run"] in report["runs"]
    assert report["runs"][entry["run"]]["interrupted"] == name
    assert report["notebooks"]["01_first"]["status"] == "ok"
    assert report["notebooks"]["01_first"]["run"] == entry["run"]

    _rerun_02(project)


def test_sigkill_leaves_old_outputs_and_the_rerun_cleans_up(project):
    proc, kernel_pid = _start_and_wait_for_02(project)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    while not _gone(kernel_pid):  # the orphaned kernel notices its parent is gone and exits
        time.sleep(0.1)

    assert _old_or_new(project) == {"01_first": "new", "02_sleepy": "old"}
    left = _leftovers(project)
    assert any(n.endswith(regen.RUNNING_SUFFIX) for n in left)  # what the next run must clean
    assert any(n.startswith(regen.STAGING_PREFIX) for n in left)
    report = json.loads((project / "results" / "smoke" / "regeneration.json").read_text())
    assert report["notebooks"]["01_first"]["run"] != report["notebooks"]["02_sleepy"]["run"]

    _rerun_02(project)
    nb = nbformat.read(project / "notebooks" / "02_sleepy.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters == {"profile": "smoke"}
