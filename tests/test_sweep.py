"""The sweep (dannlib.sweep): local worker processes give the records of in-process
training; a worker killed mid-sweep has its runs retried; a sweep killed outright leaves no
half-written run and a rerun completes it with the same numbers; Ctrl-C ends with a summary
and exit 130; the ``sweep`` command's options. Toy runs of a few hundred steps on a temporary
store; the subprocesses run a small script (``_SCRIPT``) that sweeps a custom list of runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import psutil
import pytest

from dann_study.__main__ import main as cli_main
from dannlib.store import RunSpec, Store, toy_data
from dannlib.sweep import ensure

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent('''
    """Sweep a custom list of toy runs into a store: python sweep_toys.py STORE N STEPS WORKERS."""
    import json, sys
    from pathlib import Path

    from dannlib.store import RunSpec, Store, toy_data
    from dannlib.sweep import ensure
    from dannlib.utils import configure_threads


    def specs(n, steps):
        data = toy_data("blobs", n=300, seed=0)
        return [RunSpec.make("dann", data, seed, network="toy", steps=steps, batch_size=32, eval_every=steps // 3)
                for seed in range(n)]


    if __name__ == "__main__":   # spawned workers import this file: nothing runs at import
        configure_threads(1)
        root, n, steps, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        todo = specs(n, steps)
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "specs.json").write_text(json.dumps([s.payload() for s in todo]))
        out = ensure(todo, store=Store(root), workers=workers, progress=False)
        s = ensure.last_summary
        print("SUMMARY " + json.dumps({"found": s.found, "trained": s.trained, "failed": s.failed,
                                       "not_started": s.not_started, "ok": len(out)}), flush=True)
''')


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(DANNLIB_PROGRESS="0", DANNLIB_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "sweep_toys.py"
    path.write_text(_SCRIPT)
    return path


def _specs_of(root: Path) -> list[RunSpec]:
    payloads = json.loads((root / "specs.json").read_text())
    return [RunSpec(p["method"], p["config"], p["data"], p["seed"], p["monitor_size"]) for p in payloads]


def _finished(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.json"))


def _check_store(root: Path, specs: list[RunSpec]) -> dict[RunSpec, object]:
    """Every finished file in the store parses, is one of ``specs`` (the key in its name and
    inside it is its spec's key), and reads back without a warning; leftovers of killed
    writers are hidden temporary files, never taken for runs. Returns the stored runs."""
    by_key = {s.key: s for s in specs}
    store = Store(root)
    runs = {}
    for path in _finished(root):
        blob = json.loads(path.read_text())            # never a half-written file
        spec = by_key[path.stem]
        assert blob["key"] == spec.key and blob["spec"] == spec.payload(), path
        assert path.with_suffix(".pt").is_file(), f"{path} is finished but its weights are missing"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            runs[spec] = store.get(spec)
        assert runs[spec] is not None and runs[spec].status == "ok"
    for path in root.glob("*/*"):
        if path.name.startswith("."):
            assert path.suffix in (".tmp", ".pt"), path   # a killed writer's temporary file
        else:
            assert path.stem in by_key and path.suffix in (".json", ".pt"), path
    assert {s for s in specs if store.get(s) is not None} == set(runs)
    return runs


def _numbers(run) -> dict:
    timings = ("seconds", "wall_seconds")
    return {"final": {k: v for k, v in run.final.items() if k not in timings}, "history": run.history}


def _assert_same_numbers(a, b) -> None:
    na, nb = _numbers(a), _numbers(b)
    assert na["final"].keys() == nb["final"].keys()
    for k, v in na["final"].items():
        assert v == (pytest.approx(nb["final"][k], rel=1e-6, abs=1e-9) if isinstance(v, float) else nb["final"][k]), k
    assert len(na["history"]) == len(nb["history"])
    for ra, rb in zip(na["history"], nb["history"]):
        assert ra.keys() == rb.keys()
        for k, v in ra.items():
            assert v == (pytest.approx(rb[k], rel=1e-6, abs=1e-9) if isinstance(v, float) else rb[k]), (ra["step"], k)


def _start(script: Path, root: Path, n: int, steps: int, workers: int = 2) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(root), str(n), str(steps), str(workers)],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _workers(proc: subprocess.Popen) -> list[psutil.Process]:
    """The spawned worker processes of a sweep (not multiprocessing's resource tracker)."""
    out = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            pass
    return out


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0, what: str = ""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the sweep ended before {what} (rc {proc.returncode}):\n{out}\n{err}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _summary(stdout: str) -> dict:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("SUMMARY ")]
    return json.loads(line[len("SUMMARY "):])


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the sweep and every process under it (a no-op once it has ended)."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for p in children:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    psutil.wait_procs(children, timeout=10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


# -- local processes vs in-process -----------------------------------------------------------------
@pytest.mark.slow
def test_local_workers_give_the_records_of_in_process_training(tmp_path):
    data = toy_data("blobs", n=80, seed=0)
    specs = [RunSpec.make(m, data, seed, network="toy", steps=40, batch_size=16, eval_every=10)
             for m, seed in (("dann", 0), ("dann", 1), ("source_only", 0))]
    serial = ensure(specs, store=Store(tmp_path / "one"), workers=1, progress=False)
    assert ensure.last_summary.trained == 3
    parallel = ensure(specs, store=Store(tmp_path / "two"), workers=2, progress=False)
    s = ensure.last_summary
    assert (s.trained, s.found, s.failed, s.not_started) == (3, 0, [], 0)
    assert list(serial) == list(parallel) == specs
    for spec in specs:
        assert parallel[spec].path.parent.parent == tmp_path / "two"
        _assert_same_numbers(serial[spec], parallel[spec])
        assert len(serial[spec].history) == 4 and serial[spec].final["steps"] == 40
        assert serial[spec].final["target_acc"] == parallel[spec].final["target_acc"]
        a, b = serial[spec].load_modules()["net"], parallel[spec].load_modules()["net"]
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert va.shape == vb.shape and (va - vb).abs().max().item() <= 1e-6, k
    # the runs differ from each other: the comparison is not vacuous
    assert serial[specs[0]].history != serial[specs[1]].history


def test_in_process_training_uses_the_thread_policy_and_restores_the_callers(tmp_path, monkeypatch):
    """A run trained in the caller's process (a notebook, a one-run phase) trains on one thread, as a worker does, and
    records it; the caller's thread count comes back afterwards."""
    import torch

    from dannlib import sweep

    monkeypatch.delenv("DANNLIB_THREADS", raising=False)
    seen = []
    monkeypatch.setattr(sweep, "_compute", lambda *a, **k: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    spec = RunSpec.make("dann", toy_data("blobs", n=60, seed=0), 0, network="toy", steps=4, batch_size=8)
    try:
        ensure([spec], store=Store(tmp_path), workers=1, progress=False)
        assert seen == [1] and torch.get_num_threads() == 2
        torch.set_num_threads(1)
        ensure([spec], store=Store(tmp_path), workers=1, progress=False, threads=2)  # an explicit count wins
        assert seen == [1, 2] and torch.get_num_threads() == 1
        monkeypatch.setenv("DANNLIB_THREADS", "two")
        with pytest.raises(ValueError, match=r"\$DANNLIB_THREADS"):  # refused before anything trains
            ensure([spec], store=Store(tmp_path), workers=1, progress=False)
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)


def test_a_pool_broken_between_two_waits_does_not_end_the_sweep(tmp_path, monkeypatch, capsys):
    """A worker that dies after one wait and before the next submit makes ``submit`` raise
    BrokenProcessPool (not a future's result): its runs go on in a new pool. Thread pools
    stand in for the process pools here (no spawn; the same store and numbers)."""
    import concurrent.futures as cf

    made = []

    class FlakyPool(cf.ThreadPoolExecutor):
        def __init__(self, max_workers, mp_context=None, initializer=None):
            super().__init__(max_workers)
            made.append(self)
            self.submitted = 0

        def submit(self, fn, *args, **kwargs):
            self.submitted += 1
            if len(made) == 1 and self.submitted == 2:
                raise cf.process.BrokenProcessPool("A child process terminated abruptly")
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(cf, "ProcessPoolExecutor", FlakyPool)
    data = toy_data("blobs", n=60, seed=0)
    specs = [RunSpec.make("dann", data, seed, network="toy", steps=10, batch_size=8) for seed in range(3)]
    out = ensure(specs, store=Store(tmp_path), workers=2, progress=False)
    s = ensure.last_summary
    assert (s.trained, s.failed, s.not_started) == (3, [], 0) and list(out) == specs
    assert len(made) == 2, "the broken pool is replaced by a new one"
    assert "worker process died" in capsys.readouterr().err


# -- kills ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_killed_worker_has_its_runs_retried(tmp_path, script):
    root = tmp_path / "store"
    proc = _start(script, root, n=4, steps=200)
    try:
        _wait_for(lambda: _finished(root), proc, what="the first finished run")
        victims = _wait_for(lambda: [w for w in _workers(proc) if w.is_running()], proc, what="a worker")
        victims[0].kill()                                   # SIGKILL, mid-sweep
        out, err = proc.communicate(timeout=180)
    finally:
        _kill_tree(proc)
    assert proc.returncode == 0, err
    # the runs in flight are retried (or, had none been in flight, the pool is replaced)
    assert "sweep: retrying dann seed" in err or "continuing in a new pool" in err, err
    assert "worker process died" in err, err
    summary = _summary(out)
    assert summary["failed"] == [] and summary["ok"] == 4 and summary["trained"] == 4, summary
    specs = _specs_of(root)
    runs = _check_store(root, specs)
    assert set(runs) == set(specs) and all(r.final["steps"] == 200 for r in runs.values())


@pytest.mark.slow
def test_a_sweep_killed_outright_leaves_no_partial_run_and_a_rerun_completes_it(tmp_path, script):
    root = tmp_path / "store"
    proc = _start(script, root, n=4, steps=200)
    try:
        _wait_for(lambda: _finished(root), proc, what="the first finished run")
        assert _workers(proc), "the runs should be in flight in worker processes"
    finally:
        _kill_tree(proc)                                    # SIGKILL the parent and its workers
    assert proc.wait(timeout=10) == -signal.SIGKILL
    specs = _specs_of(root)
    before = _check_store(root, specs)
    assert 1 <= len(before) < len(specs), f"{len(before)} of {len(specs)} runs finished before the kill"

    rerun = ensure(specs, store=Store(root), workers=1, progress=False)   # the rerun, in this process
    summary = ensure.last_summary
    assert summary.failed == [] and len(rerun) == 4
    assert summary.found >= len(before) and summary.found + summary.trained == 4, summary
    after = _check_store(root, specs)
    assert set(after) == set(specs)
    for spec, run in before.items():                      # finished runs were kept, not retrained
        assert after[spec].seconds == run.seconds and after[spec].final == run.final

    reference = ensure(specs, store=Store(tmp_path / "reference"), workers=1, progress=False)
    for spec in specs:
        _assert_same_numbers(after[spec], reference[spec])


@pytest.mark.slow
def test_ctrl_c_ends_with_a_summary_and_exit_130_keeping_finished_runs(tmp_path):
    store, results = tmp_path / "store", tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "dann_study", "sweep", "--profile", "smoke", "--only", "01",
                             "--seeds", "0,1", "--workers", "2", "--store", str(store)], cwd=ROOT,
                            env=_env(DANNLIB_RESULTS=str(results), DANNLIB_PROGRESS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: _finished(store), proc, what="the first finished run")
        os.killpg(proc.pid, signal.SIGINT)                  # Ctrl-C: the whole process group
        out, err = proc.communicate(timeout=60)
    finally:
        _kill_tree(proc)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    (interrupted,) = [ln for ln in err.splitlines() if ln.startswith("sweep interrupted: ")]
    assert "16 runs: 0 found in the store" in interrupted and "rerun to continue" in interrupted
    last = out.strip().splitlines()[-1]
    assert last.startswith("sweep [smoke]: 16 runs: 0 found in the store, "), out
    record = json.loads((results / "smoke" / "sweep.json").read_text())
    assert record["total"] == 16 and record["failed"] == [] and record["trained"] < 16
    assert f"{record['trained']} trained" in last
    from dann_study.plan import plan_specs

    specs = plan_specs("01", "smoke", [0, 1])
    kept = _check_store(store, specs)
    assert max(1, record["trained"]) <= len(kept) < 16, "finished runs are kept, the rest were stopped"


@pytest.mark.slow
def test_workers_end_with_a_parent_killed_alone(tmp_path, script):
    """SIGKILL of the sweep's parent only (not its process group): its workers end too, rather
    than training their runs on unseen and taking the CPU from the rerun."""
    root = tmp_path / "store"
    proc = _start(script, root, n=4, steps=400_000)  # minutes per run: a worker would outlive the check
    try:
        workers = _wait_for(lambda: _workers(proc), proc, what="the worker processes")
        proc.kill()
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, f"{len(alive)} worker(s) outlived the killed parent"
    finally:
        _kill_tree(proc)


# -- the command's options ---------------------------------------------------------------------
def test_sweep_help_documents_the_options():
    out = subprocess.run([sys.executable, "-m", "dann_study", "sweep", "--help"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for opt in ("--profile", "--only", "--workers", "--scheduler", "--time-limit", "--store", "--dry-run",
                "--recompute", "--seeds"):
        assert opt in text, opt
    assert "{smoke,quick,paper}" in text or "smoke" in text
    assert "tcp://HOST:PORT" in text and "MINUTES" in text and "130 interrupted" in text


def test_time_limit_zero_starts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DANNLIB_RESULTS", str(tmp_path / "results"))
    store = tmp_path / "store"
    rc = cli_main(["sweep", "--profile", "smoke", "--only", "01", "--workers", "2", "--time-limit", "0",
                   "--store", str(store)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "16 runs: 0 found in the store, 0 trained, 0 failed, 16 not started (time limit)" in out
    assert not _finished(store)
    record = json.loads((tmp_path / "results" / "smoke" / "sweep.json").read_text())
    assert record["not_started"] == 16 and record["trained"] == 0
    # in this process too (workers=1) the limit is honoured
    from dann_study.plan import plan_specs

    out = ensure(plan_specs("01", "smoke"), store=Store(store), workers=1, time_limit=0, progress=False)
    assert out == {} and ensure.last_summary.not_started == 16 and not _finished(store)


def test_dry_run_lists_the_missing_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DANNLIB_RESULTS", str(tmp_path / "results"))
    from dann_study.plan import plan_specs

    specs = plan_specs("01", "smoke")
    store = tmp_path / "store"
    ensure(specs[:3], store=Store(store), workers=1, progress=False)
    rc = cli_main(["sweep", "--profile", "smoke", "--only", "01", "--store", str(store), "--dry-run",
                   "--workers", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "16 runs, 13 to train" in out and str(store) in out
    listed = [ln.split()[-1] for ln in out.splitlines() if ln.startswith("  ")]
    assert listed == [s.key for s in specs[3:]]
    assert len(_finished(store)) == 3 and not (tmp_path / "results" / "smoke" / "sweep.json").exists()


def test_phases_put_every_dependency_first_once_and_order_longest_first(tmp_path):
    """ADDA's pre-training runs are rows of notebook 05 *and* dependencies of its stage 2: they
    must all be trained in the first phase (or a stage-2 run started beside its own
    pre-training would retrain it in another worker), and never again in the second."""
    from dann_study.plan import plan_specs
    from dannlib.sweep import _phases

    specs = plan_specs("05", "smoke")
    deps = {d for s in specs for d in s.dependencies()}
    assert deps and deps <= set(specs)
    first, second = _phases(specs, Store(tmp_path), recompute=False)
    assert set(first) == deps and not deps & set(second)
    assert len(first) + len(second) == len(set(specs))
    for phase in (first, second):
        costs = [s.cost_steps() for s in phase]
        assert costs == sorted(costs, reverse=True)


def test_prune_removes_only_the_runs_no_plan_needs(tmp_path, capsys):
    """A run no notebook needs under any profile (here: a toy run at an unplanned step count)
    is removed with its weights; a planned run is kept; --dry-run removes nothing."""
    from dann_study.plan import plan_specs

    store = Store(tmp_path)
    planned = plan_specs("01", "smoke")[0]
    stray = RunSpec.make("dann", toy_data("blobs", n=300, seed=0), 0, network="toy", steps=7, batch_size=8)
    ensure([planned, stray], store=store, workers=1, progress=False)
    assert store.get(stray).weights_path.is_file()
    assert cli_main(["sweep", "--prune", "--dry-run", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 stored run(s)" in out and f"dann/{stray.key}" in out and "nothing removed" in out
    assert store.get(stray) is not None
    assert cli_main(["sweep", "--prune", "--store", str(tmp_path)]) == 0
    assert store.get(stray) is None and not store.path(stray).with_suffix(".pt").exists()
    assert store.get(planned) is not None


def test_recompute_retrains_in_worker_processes_too(tmp_path):
    """--recompute with local workers: each run is trained again (its record replaced by a
    new file with the same numbers), not handed back from the store by the worker."""
    data = toy_data("blobs", n=80, seed=0)
    specs = [RunSpec.make("dann", data, seed, network="toy", steps=30, batch_size=16, eval_every=10)
             for seed in (0, 1)]
    store = Store(tmp_path)
    first = ensure(specs, store=store, workers=2, progress=False)
    inodes = {s: first[s].path.stat().st_ino for s in specs}
    again = ensure(specs, store=store, workers=2, progress=False, recompute=True)
    assert ensure.last_summary.trained == 2 and ensure.last_summary.failed == []
    for s in specs:
        assert again[s].path.stat().st_ino != inodes[s], "the record was not rewritten"
        _assert_same_numbers(first[s], again[s])


def test_a_worker_retrains_a_run_whose_weights_are_missing(tmp_path):
    """A fresh clone holds records without (git-ignored) weights; the sweep then hands a
    dependency whose weights are missing to a worker, which must train it, not return the
    weightless record."""
    from dannlib.sweep import _payload, _worker_compute

    data = toy_data("blobs", n=80, seed=0)
    spec = RunSpec.make("dann", data, 0, network="toy", steps=30, batch_size=16, eval_every=10)
    store = Store(tmp_path)
    before = ensure([spec], store=store, workers=1, progress=False)[spec]
    ino = before.path.stat().st_ino
    before.weights_path.unlink()
    _worker_compute(_payload(spec), str(tmp_path), None, 1)
    after = store.get(spec)
    assert after.weights_path.is_file() and after.path.stat().st_ino != ino
    _assert_same_numbers(before, after)


def test_only_an_oracle_trains_on_the_labelled_target(tmp_path, monkeypatch):
    """compute hands ``train`` the labelled target training set as the source for an oracle (train_on_target) only;
    every other method gets the source, and the target always without labels."""
    import torch

    import dannlib.methods
    from dannlib import sweep
    from dannlib.store import load_data

    class Stop(Exception):
        pass

    seen = {}

    def fake_train(method, source, target, **kwargs):
        seen[method] = (source, target)
        raise Stop

    monkeypatch.setattr(dannlib.methods, "train", fake_train)
    data = toy_data("blobs", n=60, seed=0)
    for method in ("train_on_target", "source_only", "dann"):
        with pytest.raises(Stop):
            sweep.compute(RunSpec.make(method, data, 0, network="toy", steps=2, batch_size=8), Store(tmp_path),
                          progress=False)
    source, target, _ = load_data(data)
    assert not torch.equal(source.x, target.x)
    assert torch.equal(seen["train_on_target"][0].x, target.x) and torch.equal(seen["train_on_target"][0].y, target.y)
    assert all(torch.equal(seen[m][0].x, source.x) for m in ("source_only", "dann"))
    assert all(t.y is None and torch.equal(t.x, target.x) for _, t in seen.values())
