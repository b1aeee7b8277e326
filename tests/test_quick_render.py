"""`make figures` from a clone, the README's first command: under the quick profile the committed run store holds
every run (the sweep's dry run has nothing to train), and every notebook executes from it. Outputs go to a temporary
folder; the store is only read."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from dannlib.utils import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_the_quick_profile_renders_from_the_committed_store(tmp_path, real_data_root):
    env = {**os.environ, "DANNLIB_DATA": str(real_data_root), "DANNLIB_STORE": str(PROJECT_ROOT / "results" / "runs"),
           "DANNLIB_SPEED": "1"}
    for name in ("DANNLIB_PROFILE", "DANNLIB_FIGURES", "DANNLIB_RESULTS"):
        env.pop(name, None)
    dannlib = [sys.executable, "-m", "dann_study"]
    dry = subprocess.run([*dannlib, "sweep", "--profile", "quick", "--dry-run"], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert ", 0 to train " in dry, f"the committed store lacks quick runs, so a clone would train them:\n{dry}"
    notebooks = tmp_path / "notebooks"
    shutil.copytree(PROJECT_ROOT / "notebooks", notebooks, ignore=shutil.ignore_patterns(".*", "__pycache__"))
    out = subprocess.run([*dannlib, "regenerate", "--profile", "quick", "--no-sweep", "--no-progress",
                          "--notebooks-dir", str(notebooks), "--figures-dir", str(tmp_path / "figures"),
                          "--results-dir", str(tmp_path / "results")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"a notebook failed under quick:\n{out.stdout}\n{out.stderr[-3000:]}"
    assert len(list((tmp_path / "results" / "quick").glob("[0-9][0-9]_*.jsonl"))) == 9
