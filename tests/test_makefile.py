"""Every Makefile target works from a clone whose path holds a space (issue 24): run from a
temporary "clone" (the Makefile and pyproject.toml) under "with space/", with a stand-in
virtual environment whose python records its arguments, its working directory and the
variables the Makefile sets, instead of installing or training anything."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/bin/sh
exec {python} -c 'import json, os, sys; print(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(),
"env": {{k: v for k, v in os.environ.items() if k.startswith("DANNLIB_")}}}}))' "$@"
"""


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    if shutil.which("make") is None:
        pytest.skip("no make here")
    root = tmp_path_factory.mktemp("make") / "with space" / "dann study"
    root.mkdir(parents=True)
    shutil.copy(ROOT / "Makefile", root / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    py = venv_bin / "python"
    py.write_text(FAKE_PYTHON.format(python=json.dumps(os.path.realpath(os.sys.executable))))
    py.chmod(0o755)
    earlier = time.time() - 60
    os.utime(root / "pyproject.toml", (earlier, earlier))
    (root / ".venv" / ".installed").touch()  # newer than pyproject.toml: nothing to install
    return root


def _make(clone: Path, *args: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANNLIB_") and k not in ("MAKEFLAGS", "MFLAGS")}
    out = subprocess.run(["make", "--no-print-directory", *args], cwd=clone, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_lab_serves_the_clone_from_a_path_with_spaces(clone):
    (call,) = _make(clone, "lab")
    assert call["argv"][:3] == ["-m", "jupyter", "lab"]
    assert f"--ServerApp.root_dir={clone}" in call["argv"]
    assert Path(call["cwd"]) == clone


def test_test_target_writes_under_the_clone(clone):
    lint, call = _make(clone, "test")
    assert lint["argv"] == ["-m", "ruff", "check", "dannlib", "dann_study", "tests", "benchmarks"]
    assert lint["cwd"] == str(clone)
    assert call["argv"][:3] == ["-m", "pytest", "tests"]
    assert call["env"]["DANNLIB_FIGURES"] == f"{clone}/.tmp/test/figures"
    assert call["env"]["DANNLIB_RESULTS"] == f"{clone}/.tmp/test/results"
    assert (clone / ".tmp" / "test").is_dir()


@pytest.mark.parametrize("target, argv", [
    ("figures", ["-m", "dann_study", "regenerate", "--profile", "quick"]),
    ("sweep", ["-m", "dann_study", "sweep", "--profile", "quick"]),
    ("report", ["-m", "dann_study", "report", "--profile", "quick"]),
])
def test_python_targets_run_from_a_path_with_spaces(clone, target, argv):
    (call,) = _make(clone, target)
    assert call["argv"] == argv and Path(call["cwd"]) == clone


def test_bench_runs_dannlibs_benchmark_then_the_peers_then_the_pool_order_then_the_roofline(clone):
    ours, peer, pool, roofline = _make(clone, "bench")
    assert ours["argv"] == ["-m", "benchmarks.bench"] and Path(ours["cwd"]) == clone
    assert peer["argv"] == ["benchmarks/peer/run_peer.py", "--install"] and Path(peer["cwd"]) == clone
    assert pool["argv"] == ["benchmarks/pool_relu.py"] and Path(pool["cwd"]) == clone
    assert roofline["argv"] == ["benchmarks/roofline.py"] and Path(roofline["cwd"]) == clone


def test_help_and_clean_from_a_path_with_spaces(clone):
    out = subprocess.run(["make", "help"], cwd=clone, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "make figures PROFILE=paper" in out.stdout, out.stderr
    (clone / ".tmp" / "x").mkdir(parents=True, exist_ok=True)
    _make(clone, "clean")
    assert not (clone / ".tmp").exists() and (clone / ".venv" / "bin" / "python").exists()
