"""The run store (dannlib.store): run keys, the stored run's round trip (numbers, history,
weights), corrupt or mismatched files treated as missing, leftovers of killed writers,
``ensure``'s train_missing policy, and ADDA's shared pre-training. Toy runs of a few steps,
trained in this process."""
from __future__ import annotations

import json
import os
import time

import pytest
import torch

import dannlib.methods
import dannlib.store as store_mod
from dann_study.plan import fetch
from dannlib.store import RunSpec, Store, load_data, toy_data
from dannlib.sweep import MissingRunsError, ensure
from synthetic import tiny_adda  # tests/synthetic.py

DATA = toy_data("blobs", n=60, seed=0)


def toy_spec(seed=0, *, data=DATA, monitor_size=2000, **overrides):
    cfg = dict(network="toy", steps=12, batch_size=8, lr=0.01)
    cfg.update(overrides)
    return RunSpec.make("dann", data, seed, monitor_size=monitor_size, **cfg)


# -- keys ---------------------------------------------------------------------------------------
def test_same_spec_same_key_and_every_change_another_key(monkeypatch):
    base = toy_spec()
    again = toy_spec()
    assert base is not again and base.key == again.key and base == again and hash(base) == hash(again)
    assert len(base.key) == 20 and all(c in "0123456789abcdef" for c in base.key)
    assert Store("/x").path(base) == Store("/x").path(again)

    changed = {
        "config value": toy_spec(lr=0.02),
        "another config field": toy_spec(steps=13),
        "method": RunSpec.make("source_only", DATA, 0, network="toy", steps=12, batch_size=8, lr=0.01),
        "data seed": toy_spec(data=toy_data("blobs", n=60, seed=1)),
        "data size": toy_spec(data=toy_data("blobs", n=61, seed=0)),
        "toy": toy_spec(data=toy_data("moons", n=60, seed=0)),
        "seed": toy_spec(1),
        "monitor size": toy_spec(monitor_size=1999),
    }
    keys = {name: s.key for name, s in changed.items()}
    for name, key in keys.items():
        assert key != base.key, f"changing the {name} kept the key"
    assert len(set(keys.values())) == len(keys)

    monkeypatch.setattr(store_mod, "STORE_FORMAT", store_mod.STORE_FORMAT + 1)
    bumped = toy_spec()
    assert bumped.key != base.key, "bumping STORE_FORMAT must make every stored run count as missing"
    assert bumped.payload()["store_format"] == store_mod.STORE_FORMAT


def test_bumped_store_format_makes_a_stored_run_missing(tmp_path, monkeypatch):
    store = Store(tmp_path)
    spec = toy_spec()
    ensure([spec], store=store, workers=1, progress=False)
    assert store.get(spec) is not None
    monkeypatch.setattr(store_mod, "STORE_FORMAT", store_mod.STORE_FORMAT + 1)
    assert store.get(toy_spec()) is None


def test_make_rejects_bad_seeds():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed must be an integer"):
            toy_spec(bad)


# -- the round trip -------------------------------------------------------------------------------
def _train(spec):
    source, target, evals = load_data(spec.data)
    (res,) = dannlib.methods.train(spec.method, source, target.unlabelled(), seeds=[spec.seed], eval_sets=evals,
                                   progress=False, monitor_size=spec.monitor_size, **spec.config)
    return res, evals


def test_stored_run_round_trips(tmp_path):
    spec = toy_spec(steps=30, eval_every=10)
    res, evals = _train(spec)
    store = Store(tmp_path)
    put = store.put(spec, res)
    path = tmp_path / "dann" / f"{spec.key}.json"
    assert put.path == path and path.is_file() and path.with_suffix(".pt").is_file()
    assert sorted(p.name for p in (tmp_path / "dann").iterdir()) == [f"{spec.key}.json", f"{spec.key}.pt"]

    got = Store(tmp_path).get(spec)   # a fresh Store: read from disk
    assert got is not None and got.spec == spec and got.status == "ok"
    assert got.final == json.loads(json.dumps(res.final)) and got.final["steps"] == 30
    assert got.history == json.loads(json.dumps(res.history)) and len(got.history) >= 3
    assert got.seconds == res.seconds
    assert got.code["store_format"] == store_mod.STORE_FORMAT and "torch" in got.machine
    rec = got.record(toy="blobs")
    assert rec["key"] == spec.key and rec["seed"] == 0 and rec["toy"] == "blobs"
    assert rec["target_acc"] == res.final["target_acc"]

    loaded = got.load_modules()
    assert set(loaded) == set(res.modules) == {"net"}
    trained = res.modules["net"].eval()
    x = torch.cat([evals["source"].x, evals["target"].x])
    with torch.no_grad():
        assert torch.equal(loaded["net"](x), trained(x))
    for k, v in trained.state_dict().items():
        assert torch.equal(loaded["net"].state_dict()[k], v), k
    # the accuracy stored is the loaded network's accuracy on the target
    with torch.no_grad():
        acc = (loaded["net"](evals["target"].x).argmax(1) == evals["target"].y).float().mean().item()
    assert acc == pytest.approx(got.final["target_acc"], abs=1e-9)


def test_missing_weights_are_a_clear_error(tmp_path):
    spec = toy_spec()
    run = ensure([spec], store=Store(tmp_path), workers=1, progress=False)[spec]
    run.weights_path.unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        run.load_modules()


# -- corrupt or mismatched files ------------------------------------------------------------------
@pytest.mark.parametrize("content", ["{\"spec\": {\"meth", "not json at all", "[]", "null", "{}",
                                     "MISMATCHED", "NOFINAL"])
def test_corrupt_or_mismatched_file_is_ignored_with_a_warning(tmp_path, content):
    store = Store(tmp_path)
    spec, other = toy_spec(0), toy_spec(1)
    if content in ("MISMATCHED", "NOFINAL"):
        ensure([other], store=store, workers=1, progress=False)
        blob = json.loads(store.path(other).read_text())
        if content == "NOFINAL":
            blob["spec"] = spec.payload()
            del blob["final"]
        content = json.dumps(blob)   # MISMATCHED: another run's file under this run's key
    store.path(spec).parent.mkdir(parents=True, exist_ok=True)
    store.path(spec).write_text(content)
    with pytest.warns(UserWarning, match="ignoring the stored run .* it will be recomputed"):
        assert store.get(spec) is None
    with pytest.warns(UserWarning, match="ignoring the stored run"):
        with pytest.raises(MissingRunsError, match="1 of 1 runs"):
            ensure([spec], store=store, train_missing=False, progress=False)
    # treated as missing: ensure recomputes it and replaces the bad file
    with pytest.warns(UserWarning, match="ignoring the stored run"):
        out = ensure([spec], store=store, workers=1, progress=False)
    assert out[spec].spec == spec and json.loads(store.path(spec).read_text())["key"] == spec.key
    assert store.get(spec) is not None


# -- leftovers of killed writers ---------------------------------------------------------------
def test_clean_partial_removes_leftovers_never_a_finished_run(tmp_path):
    store = Store(tmp_path)
    spec = toy_spec()
    ensure([spec], store=store, workers=1, progress=False)
    folder = tmp_path / "dann"
    finished = sorted(folder.iterdir())
    # what atomic_write / atomic_path leave behind when their writer is killed
    old = [folder / f".{spec.key}.json.k1l2m3.tmp", folder / f".{spec.key}.a8b9c0.pt",
           folder / ".0123456789abcdef0123.json.zzz.tmp"]
    fresh = folder / f".{spec.key}.json.qqqqqq.tmp"
    for p in old + [fresh]:
        p.write_text("{\"half\": ")
    past = time.time() - 3600
    for p in old:
        os.utime(p, (past, past))
    assert store.get(spec) is not None    # leftovers are not runs
    assert store.clean_partial() == len(old)
    assert not any(p.exists() for p in old)
    assert fresh.exists(), "a temporary file young enough to belong to a writer at work must stay"
    assert sorted(p for p in folder.iterdir() if p != fresh) == finished
    assert store.clean_partial(min_age=0) == 1 and not fresh.exists()
    assert sorted(folder.iterdir()) == finished
    assert store.get(spec) is not None and store.get(spec).load_modules()
    assert Store(tmp_path / "absent").clean_partial() == 0


# -- ensure's train_missing policy ---------------------------------------------------------------
def test_train_missing_false_names_the_count_and_the_sweep_command(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(MissingRunsError) as info:
        fetch("01", "smoke", train_missing=False, store=store, progress=False)
    msg = str(info.value)
    assert "16 of 16 runs are not in the store" in msg, msg
    assert "python -m dann_study sweep --profile smoke --only 01" in msg
    assert str(tmp_path) in msg
    assert not any(tmp_path.rglob("*.json")), "nothing may be trained"
    specs = [toy_spec(0), toy_spec(1)]
    ensure(specs[:1], store=store, workers=1, progress=False)
    with pytest.raises(MissingRunsError, match="1 of 2 runs .* Compute them first: python -m dann_study sweep"):
        ensure(specs, store=store, train_missing=False, hint="python -m dann_study sweep --profile quick",
               progress=False)
    # nothing missing: no error, the stored runs come back
    out = ensure(specs[:1], store=store, train_missing=False, progress=False)
    assert list(out) == specs[:1]


def test_train_missing_auto_trains_when_cheap_and_raises_over_budget(tmp_path):
    store = Store(tmp_path)
    specs = [toy_spec(0), toy_spec(1)]
    est = store_mod.estimate_seconds(specs, 1)
    assert 0 < est < 1
    with pytest.raises(MissingRunsError, match="2 of 2 runs"):
        ensure(specs, store=store, workers=1, train_missing="auto", budget_seconds=est / 2, progress=False)
    assert all(store.get(s) is None for s in specs)
    out = ensure(specs, store=store, workers=1, train_missing="auto", budget_seconds=est * 2, progress=False)
    assert list(out) == specs and all(store.get(s) is not None for s in specs)
    assert ensure.last_summary.trained == 2 and ensure.last_summary.found == 0
    out = ensure(specs, store=store, train_missing="auto", budget_seconds=0, progress=False)
    assert list(out) == specs and ensure.last_summary.found == 2 and ensure.last_summary.trained == 0


def test_train_missing_stored_trains_nothing_and_the_note_names_what_is_missing(tmp_path):
    from dann_study.plan import coverage_note, plan

    store = Store(tmp_path)
    p = plan("01", "smoke")
    first = p.runs[0]
    ensure([first.spec], store=store, workers=1, progress=False)
    got, runs = fetch("01", "smoke", train_missing="stored", store=store, progress=False)
    assert [r.spec for _, r in runs] == [first.spec]
    assert sorted(f.name for f in tmp_path.rglob("*.json")) == [f"{first.spec.key}.json"], "nothing trained"
    note = coverage_note(got, runs)
    label = ", ".join(map(str, first.tags.values()))
    n_group = sum(q.tags == first.tags for q in p.runs)
    assert f"{len(p.runs) - 1} of {len(p.runs)} runs of the smoke profile" in note
    assert f"- {label}: {n_group - 1} of {n_group}" in note
    assert "python -m dann_study sweep --profile smoke --only 01" in note
    # complete: no note
    ensure(p.specs, store=store, workers=1, progress=False)
    got, runs = fetch("01", "smoke", train_missing="stored", store=store, progress=False)
    assert len(runs) == len(p.runs) and coverage_note(got, runs) == ""


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("stored", "stored"), (" Stored ", "stored"),
                                             ("true", True), ("False", False), (True, True), (False, False)])
def test_train_missing_values(value, expected):
    from dannlib.sweep import check_train_missing

    assert check_train_missing(value) == expected


@pytest.mark.parametrize("value", ["yes", "", 1, 0, None, 2.0])
def test_train_missing_rejects_other_values(value, tmp_path):
    with pytest.raises(ValueError, match="train_missing must be True, False, 'auto' or 'stored'"):
        ensure([toy_spec(0)], store=Store(tmp_path), train_missing=value, progress=False)


# -- ADDA's shared pre-training -------------------------------------------------------------------
def test_adda_stage2_reuses_the_stored_pretraining(tmp_path, monkeypatch):
    calls, data, common = tiny_adda(monkeypatch)
    gan = RunSpec.make("adda_gan", data, 0, **common)
    minimax = RunSpec.make("adda_minimax", data, 0, **common)
    (pre,) = gan.dependencies()
    assert minimax.dependencies() == [pre] and pre.method == "adda_pretrain"
    assert RunSpec.make("adda_gan", data, 0, **{**common, "pretrain_steps": 5}).dependencies() != [pre]
    assert RunSpec.make("adda_gan", data, 1, **common).dependencies() != [pre]

    store = Store(tmp_path)
    out = ensure([gan, minimax], store=store, workers=1, progress=False)
    assert set(out) == {gan, minimax}
    # trained once, then both stage 2s from it (not each from its own pre-training)
    assert sorted(calls) == sorted([("adda_pretrain", False), ("adda_gan", True), ("adda_minimax", True)]), calls
    assert calls[0][0] == "adda_pretrain", "the dependency goes first"
    stored_pre = store.get(pre)
    assert stored_pre is not None and stored_pre.weights_path.is_file()
    # both stage 2s started from the stored pre-training: identical frozen classifier
    w_pre = stored_pre.load_modules()["classifier"].state_dict()
    for s in (gan, minimax):
        w = out[s].load_modules()["classifier"].state_dict()
        assert all(torch.equal(w[k], v) for k, v in w_pre.items()), s.method

    # a later stage 2 with the same pre-training settings (another mapping loss) reuses it too
    calls.clear()
    confusion = RunSpec.make("adda_confusion", data, 0, **common)
    ensure([gan, minimax, confusion], store=store, workers=1, progress=False)
    assert calls == [("adda_confusion", True)]
    assert ensure.last_summary.found == 2 and ensure.last_summary.trained == 1


def test_adda_stage2_rebuilds_its_pretraining_on_the_datas_device(tmp_path, monkeypatch):
    """On a CUDA machine the data are on the GPU: the stored pre-training must be rebuilt there, not on the CPU."""
    from types import SimpleNamespace

    from dannlib.store import StoredRun
    from dannlib.sweep import compute

    calls, data, common = tiny_adda(monkeypatch)
    gan = RunSpec.make("adda_gan", data, 0, **common)
    store = Store(tmp_path)
    ensure(gan.dependencies(), store=store, workers=1, progress=False)
    loaded, passed = [], []
    real_load_data = store_mod.load_data

    def load_data(*args, **kwargs):  # the source on another device than the CPU (meta: no memory, no GPU needed)
        source, target, eval_sets = real_load_data(*args, **kwargs)
        source = SimpleNamespace(x=torch.empty(len(source.x), *source.x.shape[1:], device="meta"))
        loaded.append(source.x.device)
        return source, target, eval_sets

    class Stop(Exception):
        pass

    def load_modules(self, device=None):
        passed.append(device)
        raise Stop

    monkeypatch.setattr(store_mod, "load_data", load_data)
    monkeypatch.setattr(StoredRun, "load_modules", load_modules)
    with pytest.raises(Stop):
        compute(gan, store, progress=False)
    assert passed == loaded == [torch.device("meta")]


def test_the_estimate_deals_runs_to_the_workers_in_rounds():
    runs = [toy_spec(s) for s in range(3)]
    one = store_mod.estimate_seconds(runs[:1], 1)
    assert store_mod.estimate_seconds(runs, 1) == pytest.approx(3 * one)
    assert store_mod.estimate_seconds(runs, 2) == pytest.approx(2 * one)  # 3 equal runs on 2 workers: 2 rounds
    assert store_mod.estimate_seconds(runs, 8) == pytest.approx(one)
    assert store_mod.estimate_seconds([], 2) == 0


@pytest.fixture
def fresh_speed():
    """machine_speed's cached value cleared before and after the test, whatever the test does."""
    store_mod.machine_speed.cache_clear()
    yield
    store_mod.machine_speed.cache_clear()


def test_the_estimate_is_priced_for_this_machines_speed(monkeypatch, fresh_speed):
    """$DANNLIB_SPEED (else the probe over its reference rate) divides every run's estimated seconds."""
    spec = toy_spec(0)
    at = {}
    for speed in ("1", "2.5"):
        monkeypatch.setenv("DANNLIB_SPEED", speed)
        store_mod.machine_speed.cache_clear()
        at[speed] = store_mod.run_cost_seconds(spec)
    assert at["2.5"] == pytest.approx(at["1"] / 2.5)
    monkeypatch.delenv("DANNLIB_SPEED")
    monkeypatch.setattr(store_mod, "probe_steps_per_second", lambda: 3 * store_mod.PROBE_REFERENCE_STEPS_PER_SECOND)
    store_mod.machine_speed.cache_clear()
    assert store_mod.machine_speed() == pytest.approx(3.0)
    for bad in ("fast", "0", "-1", "nan"):
        monkeypatch.setenv("DANNLIB_SPEED", bad)
        store_mod.machine_speed.cache_clear()
        with pytest.raises(ValueError, match="DANNLIB_SPEED must be a number > 0"):
            store_mod.machine_speed()


def test_a_failed_probe_or_a_gpu_prices_as_the_reference_cpu_with_a_warning(monkeypatch, fresh_speed):
    monkeypatch.delenv("DANNLIB_SPEED")

    def broken():
        raise RuntimeError("no timer")

    monkeypatch.setattr(store_mod, "probe_steps_per_second", broken)
    with pytest.warns(UserWarning, match="speed probe failed"):
        assert store_mod.machine_speed() == 1.0
    store_mod.machine_speed.cache_clear()
    monkeypatch.setenv("DANNLIB_DEVICE", "meta")
    with pytest.warns(UserWarning, match="does not measure"):
        assert store_mod.machine_speed() == 1.0


def test_the_speed_probe_runs_on_one_thread_and_restores_the_callers(monkeypatch):
    seen = []
    real = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: (seen.append(torch.get_num_threads()),
                                                                        real(self, *a, **k))[1])
    torch.set_num_threads(2)
    try:
        assert store_mod.probe_steps_per_second(steps=2, rounds=1) > 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert seen == [1] * 6  # two warm-up blocks and one timed block of 2 steps, each on one thread


def test_a_digits_runs_cost_counts_its_evaluations_and_its_precision():
    from dannlib.store import digits_data
    data = digits_data("mnist", "usps", n_source=100, n_target=100, n_test=1000, channels=1)

    def cost(**config):
        return RunSpec.make("dann", data, 0, monitor_size=2000, steps=1000, batch_size=32, **config).cost_steps()

    # 10 evaluations more, each of 2 x 1,000 test images (n_test caps the monitor size)
    extra = 10 * 2 * 1000 * store_mod.EVAL_STEPS_PER_IMAGE
    assert cost(eval_every=50) - cost(eval_every=100) == pytest.approx(extra)
    assert cost(eval_every=100, precision="bf16") < cost(eval_every=100)


def test_a_recompute_killed_between_weights_and_record_leaves_the_run_missing(tmp_path, monkeypatch):
    spec = toy_spec(steps=12)
    store = Store(tmp_path)
    store.put(spec, _train(spec)[0])
    again, _ = _train(toy_spec(steps=12, seed=0))
    for p in again.modules["net"].parameters():  # other weights than the stored record's
        p.data.add_(1.0)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the new weights, before the new record

    monkeypatch.setattr(store_mod, "atomic_write", killed)
    with pytest.raises(KeyboardInterrupt):
        store.put(spec, again)
    assert Store(tmp_path).get(spec) is None  # not the old record beside the new weights


def test_a_worker_reads_the_stored_run_back_against_the_sweeps_data_root(tmp_path, monkeypatch):
    from dannlib import sweep
    calls = []
    real_store = sweep.Store

    def recording_store(root, data_root=None):
        calls.append(data_root)
        return real_store(root, data_root=data_root)

    monkeypatch.setattr(sweep, "Store", recording_store)
    monkeypatch.setattr(sweep, "compute", lambda spec, store, **kw: calls.append(store.data_root) or
                        type("Run", (), {"status": "ok", "seconds": 0.0})())
    sweep._worker_compute(sweep._payload(toy_spec()), str(tmp_path), "/some/data/root", 1)
    assert calls == ["/some/data/root", "/some/data/root"]  # the worker's store compares fingerprints with it


def test_compute_says_so_when_the_store_does_not_read_a_run_back(tmp_path, monkeypatch):
    from dannlib import sweep
    monkeypatch.setattr(Store, "put", lambda self, spec, result, **kw: None)
    with pytest.raises(RuntimeError, match="does not read it back"):
        sweep.compute(toy_spec(), Store(tmp_path), progress=False)
