"""Every command-line option, environment setting and API parameter named in issue 24 is
checked before any work starts: one line naming the setting, the value and the accepted range
(exit status 2 for the commands), nothing trained and nothing written to the store. Also the
run store's writability and a Dask scheduler that does not answer, found up front."""
from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest
import torch

import dann_study.regenerate as regen
import dannlib.sweep
from dann_study.__main__ import main
from dann_study.plan import fetch, plan
from dannlib import methods, settings
from dannlib.store import RunSpec, toy_data
from dannlib.training import Domain


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Fail the test if a sweep or a notebook starts; outputs under tmp_path."""
    started = []
    monkeypatch.setattr(dannlib.sweep, "ensure", lambda *a, **k: started.append("ensure"))
    monkeypatch.setattr(regen, "run_notebook", lambda *a, **k: started.append("notebook"))
    monkeypatch.setattr(regen, "run_sweep", lambda *a, **k: started.append("sweep"))
    monkeypatch.setenv("DANNLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("DANNLIB_WORKERS", raising=False)
    monkeypatch.delenv("DANNLIB_SCHEDULER", raising=False)
    return started


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("argv, words", [
    (["--workers", "0"], ["--workers", "integer >= 1", "0"]),
    (["--workers", "-2"], ["--workers", "integer >= 1", "-2"]),
    (["--time-limit", "-5"], ["--time-limit", ">= 0", "-5"]),
])
def test_sweep_refuses_bad_options(argv, words, tmp_path, no_work, capsys):
    store = tmp_path / "store"
    assert main(["sweep", "--profile", "smoke", "--only", "01", "--store", str(store), *argv]) == 2
    line = _one_line(capsys.readouterr().err)
    assert all(w in line for w in words), line
    assert no_work == [] and not store.exists()


def test_sweep_refuses_a_bad_workers_variable(tmp_path, no_work, monkeypatch, capsys):
    monkeypatch.setenv("DANNLIB_WORKERS", "abc")
    store = tmp_path / "store"
    assert main(["sweep", "--profile", "smoke", "--only", "01", "--store", str(store)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "DANNLIB_WORKERS" in line and "'abc'" in line and "integer >= 1" in line
    assert "invalid literal" not in line and no_work == [] and not store.exists()


def _notebooks(tmp_path) -> Path:
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    (nbdir / "01_x.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n')
    return nbdir


@pytest.mark.parametrize("env, argv, words", [
    ({}, ["--workers", "0"], ["--workers", "integer >= 1", "0"]),
    ({"DANNLIB_WORKERS": "abc"}, [], ["DANNLIB_WORKERS", "'abc'"]),
])
def test_regenerate_refuses_bad_workers(env, argv, words, tmp_path, no_work, monkeypatch, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc = main(["regenerate", "--notebooks-dir", str(_notebooks(tmp_path)), "--figures-dir", str(tmp_path / "f"),
               "--results-dir", str(tmp_path / "r"), "--profile", "smoke", "--no-progress", *argv])
    assert rc == 2
    line = capsys.readouterr().err.strip()
    assert all(w in line for w in words), line
    assert no_work == []


def _refuse_writes_in(folder: Path, monkeypatch):
    """Root ignores permission bits: a write refused by ``folder`` is simulated."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folder:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_regenerate_refuses_an_unwritable_store_up_front(tmp_path, no_work, monkeypatch, capsys):
    ro = tmp_path / "ro-store"
    ro.mkdir()
    _refuse_writes_in(ro, monkeypatch)
    monkeypatch.setenv("DANNLIB_STORE", str(ro))
    rc = main(["regenerate", "--notebooks-dir", str(_notebooks(tmp_path)), "--figures-dir", str(tmp_path / "f"),
               "--results-dir", str(tmp_path / "r"), "--profile", "smoke", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"output folder {ro} is not writable" in err and "$DANNLIB_STORE" in err
    assert no_work == []


def test_sweep_refuses_an_unwritable_store_up_front(tmp_path, no_work, monkeypatch, capsys):
    ro = tmp_path / "ro-store"
    ro.mkdir()
    _refuse_writes_in(ro, monkeypatch)
    assert main(["sweep", "--profile", "smoke", "--only", "01", "--store", str(ro)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"output folder {ro} is not writable" in line and "--store or $DANNLIB_STORE" in line
    assert no_work == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", None])
def test_sweep_names_a_scheduler_that_does_not_answer(address, tmp_path, no_work, capsys):
    address = address or f"tcp://127.0.0.1:{_closed_port()}"
    store = tmp_path / "store"
    assert main(["sweep", "--profile", "smoke", "--only", "01", "--store", str(store), "--scheduler", address]) == 2
    line = _one_line(capsys.readouterr().err)
    assert address in line and "no Dask scheduler answered" in line
    assert "dask scheduler" in line and "drop --scheduler" in line
    assert no_work == [] and not store.exists()


def test_scheduler_check_from_the_environment_and_bad_addresses(monkeypatch):
    monkeypatch.setenv("DANNLIB_SCHEDULER", "tcp://127.0.0.1:1")
    address, setting = settings.scheduler_setting(None)
    with pytest.raises(ConnectionError, match="unset DANNLIB_SCHEDULER"):
        settings.check_scheduler(address, setting=setting)
    with pytest.raises(ValueError, match="--scheduler must be a Dask scheduler address"):
        settings.check_scheduler("tcp://host:notaport")
    settings.check_scheduler("inproc://whatever")  # other transports are not probed


# -- the API ----------------------------------------------------------------------------------------
DATA = toy_data("blobs", n=40, seed=0)


@pytest.mark.parametrize("size", [-5, 0, 2.5, True])
def test_runspec_refuses_a_bad_monitor_size(size):
    with pytest.raises(ValueError, match="monitor_size"):
        RunSpec.make("dann", DATA, 0, monitor_size=size, network="toy", steps=4)
    with pytest.raises(ValueError, match="monitor_size"):
        RunSpec("dann", {}, DATA, 0, size)


def test_empty_seeds_are_refused(tmp_path):
    store = tmp_path / "store"
    with pytest.raises(ValueError, match="seeds"):
        plan("01", "smoke", seeds=[])
    from dannlib.store import Store

    with pytest.raises(ValueError, match="seeds"):
        fetch("01", "smoke", seeds=[], store=Store(store), train_missing=True, progress=False)
    assert not store.exists()


def test_ensure_refuses_bad_workers(tmp_path):
    from dannlib.store import Store

    spec = RunSpec.make("dann", DATA, 0, network="toy", steps=4)
    for bad in (0, -2):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            dannlib.sweep.ensure([spec], store=Store(tmp_path / "s"), workers=bad, progress=False)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("method", ["adda_gan", "adda_pretrain"])
def test_adda_source_label_outside_n_classes(method):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 28, 28, generator=g)
    y = torch.arange(20) % 10
    y[3] = 10
    src, tgt = Domain("src", x, y), Domain("tgt", x.clone(), None)
    with pytest.raises(ValueError) as e:
        methods.train(method, src, tgt, pretrain_steps=2, steps=2, batch_size=8, progress=False)
    msg = str(e.value)
    assert "label 10" in msg and "n_classes" in msg


def test_machine_info_names_the_cpu_model(tmp_path, monkeypatch):
    """Records tell machines apart by CPU model and platform string; the model comes from /proc/cpuinfo."""
    from dannlib import utils

    info = utils.machine_info("cpu")
    assert info["cpu_model"] == utils.cpu_model() and info["platform"]
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9999 64-Core Processor\nflags\t: avx512f\n")
    real_path = utils.Path
    monkeypatch.setattr(utils, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
    assert utils.cpu_model() == "AMD EPYC 9999 64-Core Processor"


@pytest.mark.parametrize("variable, value, words", [
    ("DANNLIB_THREADS", "abc", ["$DANNLIB_THREADS", "'abc'", "integer >= 1"]),
    ("DANNLIB_SPEED", "abc", ["$DANNLIB_SPEED", "'abc'", "number > 0"]),
    ("DANNLIB_DEVICE", "gpu0", ["$DANNLIB_DEVICE", "'gpu0'", "torch device"]),
])
def test_sweep_refuses_a_bad_variable_in_one_line(variable, value, words, tmp_path, no_work, monkeypatch, capsys):
    monkeypatch.setenv(variable, value)
    store = tmp_path / "store"
    for extra in ([], ["--dry-run"]):
        assert main(["sweep", "--profile", "smoke", "--only", "01", "--store", str(store), "--workers", "1",
                     *extra]) == 2
        line = _one_line(capsys.readouterr().err)
        assert all(w in line for w in words), line
    assert no_work == [] and not store.exists()


def test_regenerate_refuses_a_bad_device_variable(tmp_path, no_work, monkeypatch, capsys):
    monkeypatch.setenv("DANNLIB_DEVICE", "gpu0")
    rc = main(["regenerate", "--notebooks-dir", str(_notebooks(tmp_path)), "--figures-dir", str(tmp_path / "f"),
               "--results-dir", str(tmp_path / "r"), "--profile", "smoke", "--no-progress"])
    assert rc == 2 and "$DANNLIB_DEVICE" in _one_line(capsys.readouterr().err)
    assert no_work == []


def test_regenerate_checks_the_scheduler_variable_before_any_work(tmp_path, no_work, monkeypatch, capsys):
    monkeypatch.setenv("DANNLIB_SCHEDULER", f" tcp://127.0.0.1:{_closed_port()} ")
    rc = main(["regenerate", "--notebooks-dir", str(_notebooks(tmp_path)), "--figures-dir", str(tmp_path / "f"),
               "--results-dir", str(tmp_path / "r"), "--profile", "smoke", "--no-progress"])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and "DANNLIB_SCHEDULER" in line and "no Dask scheduler answered" in line and "unset" in line
    assert no_work == [] and not (tmp_path / "r").exists()  # refused before the run lock is taken
    # --partial trains nothing, so it needs no scheduler
    monkeypatch.setattr(regen, "run_notebook", lambda path, *a, **k: (regen.NotebookRun(Path(path).stem, "ok", 0.0),
                                                                       None))
    assert main(["regenerate", "--notebooks-dir", str(tmp_path / "notebooks"), "--figures-dir", str(tmp_path / "f"),
                 "--results-dir", str(tmp_path / "r"), "--profile", "smoke", "--no-progress", "--partial"]) == 0


def test_blank_store_data_and_cache_variables_count_as_unset(monkeypatch):
    """The three folder settings read their variable alike: one of spaces (``export DANNLIB_DATA=" "``) is unset."""
    from dannlib.data.common import cache_dir, data_root
    from dannlib.store import store_root
    from dannlib.utils import PROJECT_ROOT
    for name in ("DANNLIB_DATA", "DANNLIB_CACHE", "DANNLIB_STORE"):
        monkeypatch.setenv(name, "  ")
    monkeypatch.delenv("DANNLIB_RESULTS", raising=False)  # the store's default lies under it
    assert data_root() == PROJECT_ROOT / "data"
    assert cache_dir() == PROJECT_ROOT / "data" / "cache"
    assert store_root() == PROJECT_ROOT / "results" / "runs"


def test_relative_store_and_data_variables_are_made_absolute(tmp_path, monkeypatch):
    """A kernel runs in the notebooks folder: the sweep and the notebooks must read the same store and data."""
    from dannlib.store import store_root
    (tmp_path / "mydata").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DANNLIB_STORE", "relstore")
    monkeypatch.setenv("DANNLIB_DATA", "mydata")
    assert store_root() == tmp_path / "relstore"
    seen = {}

    def fake_notebook(path, parameters, outputs, profile, progress=True, data_root=None, run_id=None):
        seen.update(store=outputs.store, data=data_root)
        return regen.NotebookRun(Path(path).stem, "ok", 0.0), None

    monkeypatch.setattr(regen, "run_notebook", fake_notebook)
    regen.regenerate("smoke", notebooks_dir=_notebooks(tmp_path), figures_dir=tmp_path / "f",
                     results_dir=tmp_path / "r", progress=False, sweep=False)
    assert seen == {"store": tmp_path / "relstore", "data": tmp_path / "mydata"}
    monkeypatch.setenv("DANNLIB_DATA", "missing")
    with pytest.raises(FileNotFoundError, match=r"\$DANNLIB_DATA"):
        regen.regenerate("smoke", notebooks_dir=tmp_path / "notebooks", figures_dir=tmp_path / "f",
                         results_dir=tmp_path / "r", progress=False, sweep=False)


def test_notebook_02s_plan_holds_the_03_networks_it_reads():
    """02's build-gap section reads 03's source-only and DANN networks on our build: the sweep must train them."""
    for profile in ("smoke", "quick", "paper"):
        p02, p03 = plan("02", profile), plan("03", profile)
        wanted = [r.spec for r in p03.runs if r.tags == {"pair": "MNIST->MNIST-M", "method": r.tags["method"]}
                  and r.tags["method"] in ("source_only", "dann")]
        assert p02.specs == wanted and p02.seeds == p03.seeds
        assert plan("02", profile, [7]).specs == wanted  # 02's seeds are MNIST-M build seeds, not these


def test_only_without_a_number_is_refused(tmp_path, no_work, capsys):
    for text in (",", " "):
        assert main(["sweep", "--profile", "smoke", "--only", text, "--store", str(tmp_path / "s")]) == 2
        assert "no notebook number" in _one_line(capsys.readouterr().err)
    assert no_work == []


def test_prune_removes_only_files_named_as_runs(tmp_path, monkeypatch, capsys):
    """A folder given as the store by mistake (results/) keeps its reports; stray runs go."""
    from dannlib.store import Store
    root = tmp_path / "results"
    kept = [root / "bench" / "bench-cpu.json", root / "paper" / "regeneration.json", root / "paper" / "sweep.json"]
    stray = [root / "dann" / "0123456789abcdef0123.json", root / "dann" / "0123456789abcdef0123.pt"]
    for path in kept + stray:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert Store(root).prune(set(), dry_run=True) == sorted(stray, key=lambda p: p.suffix == ".pt")
    assert main(["sweep", "--prune", "--store", str(root)]) == 0
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stray)
    assert main(["sweep", "--prune", "--only", "03", "--store", str(root)]) == 2
    assert "takes no --only or --seeds" in _one_line(capsys.readouterr().err)


def test_a_dry_run_removes_nothing(tmp_path, capsys):
    import os
    leftover = tmp_path / "store" / "dann" / ".0123456789abcdef0123.json.1.replaced.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("{}")
    os.utime(leftover, (1, 1))  # old enough for clean_partial
    assert main(["sweep", "--profile", "smoke", "--only", "01", "--store", str(tmp_path / "store"), "--dry-run"]) == 0
    assert leftover.exists()


def test_ensure_names_the_scheduler_variable_it_read(tmp_path, monkeypatch):
    """A notebook's fetch trains through ensure: an unreachable $DANNLIB_SCHEDULER is named as the variable, with
    "unset" as the fix (not the --scheduler option a notebook does not have)."""
    monkeypatch.setenv("DANNLIB_SCHEDULER", f"tcp://127.0.0.1:{_closed_port()}")
    spec = RunSpec.make("dann", toy_data("blobs", n=40, seed=0), 0, network="toy", steps=2, batch_size=8)
    with pytest.raises(ConnectionError) as e:
        dannlib.sweep.ensure([spec], store=dannlib.sweep.Store(tmp_path / "store"), progress=False)
    assert "DANNLIB_SCHEDULER" in str(e.value) and "unset" in str(e.value) and "--scheduler" not in str(e.value)


def test_a_relative_cache_variable_is_made_absolute(tmp_path, monkeypatch):
    from dannlib.data import cache_dir
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DANNLIB_CACHE", "mycache")
    assert cache_dir() == tmp_path / "mycache"


def test_the_kernel_gets_absolute_store_data_and_cache_folders(tmp_path, monkeypatch):
    """run_notebook hands the kernel (working folder: the notebooks folder) the folders this process resolved from
    relative variables, absolute."""
    import papermill
    for name in ("mydata", "mycache"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    for variable, value in (("DANNLIB_STORE", "relstore"), ("DANNLIB_DATA", "mydata"), ("DANNLIB_CACHE", "mycache")):
        monkeypatch.setenv(variable, value)
    seen, real = {}, regen._kernel_manager_class

    def capture(env):
        seen.update(env)
        return real(env)

    def stop(*args, kernel_manager_class=None, **kwargs):
        raise RuntimeError("stop before a kernel starts")

    monkeypatch.setattr(regen, "_kernel_manager_class", capture)
    monkeypatch.setattr(papermill, "execute_notebook", stop)
    outputs = regen.resolve_outputs("smoke", _notebooks(tmp_path), tmp_path / "f", tmp_path / "r")
    run, plan_ = regen.run_notebook(tmp_path / "notebooks" / "01_x.ipynb", {}, outputs, "smoke", progress=False,
                                    run_id="test")
    assert run.status == "failed" and plan_ is None
    assert {k: seen[k] for k in ("DANNLIB_STORE", "DANNLIB_DATA", "DANNLIB_CACHE")} == {
        "DANNLIB_STORE": str(tmp_path / "relstore"), "DANNLIB_DATA": str(tmp_path / "mydata"),
        "DANNLIB_CACHE": str(tmp_path / "mycache")}
