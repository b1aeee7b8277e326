"""The sweep on a Dask distributed cluster (dannlib.sweep._run_dask) on loopback: a
LocalCluster of two worker processes (one thread each) computes the same runs as this
process, honours a time limit, closes its client; a worker killed mid-run has its run
rescheduled, with nothing half-written in the store. Needs ``distributed`` (the ``dask``
extra): skipped without it, except under CI where that is a failure."""
from __future__ import annotations

import json
import os
import threading
import time
import warnings

import psutil
import pytest

from ci_env import in_ci

try:
    import distributed
except ImportError as exc:  # pragma: no cover - depends on the environment
    message = ("Dask's distributed package is not installed: pip install 'distributed>=2024.1' "
               "(the project's dask extra) to run the Dask sweep tests")
    if in_ci():
        raise ImportError(message + " (required under CI)") from exc
    pytest.skip(message, allow_module_level=True)

from dannlib.store import RunSpec, Store, toy_data
from dannlib.sweep import ensure

pytestmark = pytest.mark.slow

DATA = toy_data("blobs", n=120, seed=0)


def toy_spec(seed, steps=40, method="dann"):
    return RunSpec.make(method, DATA, seed, network="toy", steps=steps, batch_size=16, eval_every=max(1, steps // 4))


@pytest.fixture(scope="module")
def cluster():
    cl = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None)
    client = distributed.Client(cl)
    try:
        yield cl, client
    finally:
        client.close()
        cl.close()


def _clients(cl) -> set:
    return {c for c in cl.scheduler.clients if c != "fire-and-forget"}


def _numbers(run):
    return {k: v for k, v in run.final.items() if k not in ("seconds", "wall_seconds")}, run.history


def _assert_close(a, b, path="run"):
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _check_store(root, specs):
    """Every finished file parses and is one of ``specs``, read back without a warning;
    anything else is a hidden temporary file of a killed writer."""
    by_key = {s.key: s for s in specs}
    store = Store(root)
    runs = {}
    for path in sorted(root.glob("*/*.json")):
        blob = json.loads(path.read_text())
        spec = by_key[path.stem]
        assert blob["spec"] == spec.payload() and path.with_suffix(".pt").is_file(), path
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            runs[spec] = store.get(spec)
        assert runs[spec] is not None and runs[spec].status == "ok", path
    for path in root.glob("*/*"):
        assert path.name.startswith(".") or path.stem in by_key, path
    return runs


def test_dask_runs_equal_local_runs_and_the_client_is_closed(tmp_path, cluster):
    cl, client = cluster
    specs = [toy_spec(0), toy_spec(1), toy_spec(0, method="source_only")]
    local = ensure(specs, store=Store(tmp_path / "local"), workers=1, progress=False)

    clients_before = _clients(cl)
    remote = ensure(specs, store=Store(tmp_path / "dask"), scheduler=cl.scheduler_address, progress=False)
    s = ensure.last_summary
    assert (s.total, s.found, s.trained, s.failed, s.not_started) == (3, 0, 3, [], 0)
    assert list(remote) == specs
    for spec in specs:
        assert remote[spec].path.is_relative_to(tmp_path / "dask")
        _assert_close(_numbers(remote[spec]), _numbers(local[spec]), spec.label)
    assert remote[specs[0]].history != remote[specs[1]].history
    # the runs were computed on the workers: they imported dannlib.store (dannlib.sweep._worker_compute)
    imported = client.run(lambda: "dannlib.store" in __import__("sys").modules)
    assert len(imported) == 2 and all(imported.values()), imported
    # ensure closed the client it opened
    end = time.monotonic() + 30
    while _clients(cl) != clients_before and time.monotonic() < end:
        time.sleep(0.1)
    assert _clients(cl) == clients_before

    # found in the store: nothing sent to the cluster
    again = ensure(specs, store=Store(tmp_path / "dask"), scheduler=cl.scheduler_address, progress=False)
    assert ensure.last_summary.found == 3 and ensure.last_summary.trained == 0 and list(again) == specs
    # a time limit of 0 starts nothing on the cluster either
    more = [toy_spec(2), toy_spec(3)]
    out = ensure(more, store=Store(tmp_path / "dask"), scheduler=cl.scheduler_address, time_limit=0,
                 progress=False)
    assert out == {} and ensure.last_summary.not_started == 2 and ensure.last_summary.trained == 0
    assert not any((tmp_path / "dask").glob(f"*/{more[0].key}*"))


def _executing(client, key):
    """The address of the worker executing task ``key`` (None if none yet)."""
    def probe(dask_worker, key=key):
        return any(ts.key == key for ts in dask_worker.state.executing)

    hits = client.run(probe)
    return next((addr for addr, hit in hits.items() if hit), None)


def test_a_killed_dask_worker_has_its_run_rescheduled(tmp_path, cluster):
    cl, client = cluster
    long = toy_spec(7, steps=4000)
    specs = [long, toy_spec(8), toy_spec(9)]
    store = Store(tmp_path / "store")
    result = {}

    def sweep():
        try:
            result["out"] = ensure(specs, store=store, scheduler=cl.scheduler_address, progress=False)
            result["summary"] = ensure.last_summary
        except BaseException as exc:   # reported by the test below
            result["error"] = exc

    thread = threading.Thread(target=sweep, daemon=True)
    thread.start()
    key = f"run-{long.key}"
    end = time.monotonic() + 180
    addr = None
    while addr is None and time.monotonic() < end and thread.is_alive():
        addr = _executing(client, key)
        time.sleep(0.05)
    assert addr is not None, f"the long run never started: {result}"
    time.sleep(0.2)                                          # inside the run
    assert store.get(long) is None, "the long run should still be in flight"
    pid = client.run(os.getpid, workers=[addr])[addr]
    psutil.Process(pid).kill()                               # SIGKILL the worker mid-run
    thread.join(timeout=300)
    assert not thread.is_alive(), "the sweep did not finish after a worker was killed"
    assert "error" not in result, result.get("error")
    s = result["summary"]
    assert s.failed == [] and s.trained == 3 and s.not_started == 0, s
    assert set(result["out"]) == set(specs)
    runs = _check_store(store.root, specs)
    assert set(runs) == set(specs) and runs[long].final["steps"] == 4000
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # the scheduler saw the run start twice: on the killed worker, then again elsewhere
    starts = [t for t in cl.scheduler.story(key) if t[0] == key and t[2] == "processing"]
    assert len(starts) >= 2, cl.scheduler.story(key)


def test_no_run_starts_on_the_cluster_after_the_time_limit(tmp_path, cluster, monkeypatch):
    """A fake clock (the sweep's only) that passes the limit as soon as a run is stored:
    the runs already queued finish, no other starts (all were sent at once before)."""
    import types

    import dannlib.sweep as sweep_mod

    cl, _ = cluster
    root = tmp_path / "store"
    clock = lambda: 100.0 if any(root.glob("*/*.json")) else 0.0
    monkeypatch.setattr(sweep_mod, "time", types.SimpleNamespace(monotonic=clock))
    specs = [toy_spec(s) for s in range(10, 16)]
    out = ensure(specs, store=Store(root), scheduler=cl.scheduler_address, time_limit=10, progress=False)
    s = ensure.last_summary
    assert s.failed == [] and s.trained == len(out) and s.trained + s.not_started == 6, s
    assert 1 <= s.trained <= 2, f"{s.trained} runs started: at most one per worker thread may be queued"
    assert len(list(root.glob("*/*.json"))) == s.trained
