"""``python -m benchmarks.bench`` (benchmarks/bench/): a tiny invocation writes a complete JSON
record whose ratios are the measured ones; every variant really performs its optimiser
steps; the baseline's hand-written step is the DANN step. No speed assertions: speed is
compared as ratios inside one benchmark run, never as limits in tests."""
from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch

from benchmarks import bench
from dannlib import methods
from dannlib.training import Domain
from dannlib.utils import configure_threads


def test_tiny_benchmark_writes_a_valid_record(tmp_path):
    out = tmp_path / "b.json"
    threads = torch.get_num_threads()
    rc = bench.main(["--device", "cpu", "--steps", "2", "--repeats", "2", "--seeds", "2", "--warmup", "1",
                     "--threads", "1", "--num-workers", "1", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert torch.get_num_threads() == threads  # the thread setting is restored
    rec = json.loads(out.read_text())
    for key in ("machine", "device", "torch", "torchvision", "threads", "settings", "measurements",
                "ratios_seed_steps", "load_average_1min", "setup_seconds"):
        assert key in rec, key
    assert rec["device"] == "cpu" and rec["settings"]["seeds_K"] == 2 and rec["settings"]["steps"] == 2
    assert rec["settings"]["precisions"] == ["fp32", "bf16"]
    rows = {r["variant"]: r for r in rec["measurements"]}
    assert set(rows) == {"dataloader", "fit", "fit_bf16", "fit_contiguous", "fit_separate"}
    for r in rows.values():
        assert math.isfinite(r["steps_per_s"]) and r["steps_per_s"] > 0
        assert r["seed_steps_per_s"] == pytest.approx(r["steps_per_s"] * r["seeds"])
        assert r["images_per_s"] == pytest.approx(r["seed_steps_per_s"] * 2 * bench.variants.BATCH)
    assert rows["fit_separate"]["seeds"] == 2 and rows["fit"]["seeds"] == 1
    # (c) is K fits of (b): a step of it takes K times (b)'s wall and CPU seconds, in every unit of the row
    sep, fit = rows["fit_separate"], rows["fit"]
    assert sep["steps_per_s"] == pytest.approx(fit["steps_per_s"] / 2)
    assert sep["cpu_steps_per_s"] == pytest.approx(fit["cpu_steps_per_s"] / 2)
    for r in (sep, fit):
        assert r["steps_per_s"] == pytest.approx(statistics.median(2 / x for x in r["seconds_each_round"]))
        assert r["steps_per_s_each_round"] == pytest.approx([2 / x for x in r["seconds_each_round"]])
        assert r["cpu_steps_per_s"] == pytest.approx(statistics.median(2 / x for x in r["cpu_seconds_each_round"]))


def test_record_ratios_are_the_ones_measured(tmp_path):
    """Every number of the record follows from the recorded round times: steps/s is the
    median of steps / seconds over the rounds, and each ratio (dannlib/baseline, bf16/fp32,
    channels_last) is the quotient of the two rows' medians; each measured variant made
    exactly --steps optimiser steps per round."""
    out = tmp_path / "b.json"
    assert bench.main(["--device", "cpu", "--steps", "3", "--repeats", "3", "--seeds", "1", "--warmup", "1",
                       "--threads", "1", "--num-workers", "0", "--out", str(out), "--no-progress"]) == 0
    rec = json.loads(out.read_text())
    rows = {r["variant"]: r for r in rec["measurements"]}
    assert set(rows) == {"dataloader", "fit", "fit_bf16", "fit_contiguous"}  # K = 1: no multi-seed rows
    for r in rows.values():
        assert len(r["seconds_each_round"]) == 3 and r["optimizer_steps_each_round"] == 3
        assert r["steps_per_s"] == pytest.approx(statistics.median(3 / s for s in r["seconds_each_round"]))
    q = rec["ratios_seed_steps"]["1"]
    sps = lambda name: rows[name]["steps_per_s"]
    assert q["b_over_a"] == pytest.approx(sps("fit") / sps("dataloader"))
    assert q["dann_bf16_over_fp32"] == pytest.approx(sps("fit_bf16") / sps("fit"))
    assert q["b_over_fit_contiguous"] == pytest.approx(sps("fit") / sps("fit_contiguous"))
    assert q["c_is"] == "fit"


def test_a_variant_that_skips_its_steps_is_an_error(tmp_path, monkeypatch):
    """If dannlib's loop did no work (here: fit replaced by a no-op), the step count catches
    it instead of reporting an absurd speed."""
    monkeypatch.setattr(bench.variants, "fit", lambda *a, **k: [])
    with pytest.raises(RuntimeError, match="0 optimiser steps"):
        bench.main(["--device", "cpu", "--steps", "2", "--repeats", "1", "--seeds", "1", "--threads", "1",
                    "--num-workers", "0", "--precision", "fp32", "--out", str(tmp_path / "b.json"),
                    "--no-progress"])
    assert not (tmp_path / "b.json").exists()


def test_baseline_and_fit_make_the_same_optimizer_steps():
    """Given the same seed and step count, the DataLoader baseline and dannlib's loop (each
    precision, and ADDA/IIMT) perform the same number of optimiser steps: the benchmark
    compares equal work."""
    img_s, lab_s, img_t, source, target = bench.variants._synthetic(torch.device("cpu"))
    base = bench.variants._DataLoaderBaseline(img_s, lab_s, img_t, torch.device("cpu"), seed=0, num_workers=0)
    variants = [base] + [bench.variants._FitVariant("dann", source, target, [0], p) for p in ("fp32", "bf16")]
    variants.append(bench.variants._FitVariant("iimt", source, target, [0], "bf16"))
    _, _, _, src1, tgt1 = bench.variants._synthetic(torch.device("cpu"), channels=1)
    variants.append(bench.variants._FitVariant("adda_gan", src1, tgt1, [0], "bf16", batch_size=128))
    for steps in (1, 5):
        for v in variants:
            before = v.counter.count
            v.run(steps)
            assert v.counter.count - before == steps, type(v).__name__


def test_bench_environment_restores_threads_and_tf32():
    threads, tf32 = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32
    with bench.steps.bench_environment(torch.device("cuda")) as used:  # only flags are set: no GPU needed
        assert used is True and torch.backends.cuda.matmul.allow_tf32
        configure_threads(threads + 1)
    assert torch.backends.cuda.matmul.allow_tf32 == tf32 and torch.get_num_threads() == threads
    with pytest.raises(KeyError):
        with bench.steps.bench_environment(torch.device("cpu")) as used:
            assert used is None
            configure_threads(threads + 1)
            raise KeyError("restored on errors too")
    assert torch.get_num_threads() == threads and torch.backends.cuda.matmul.allow_tf32 == tf32


def test_accuracy_mode_writes_per_run_numbers_and_summary(tmp_path, monkeypatch):
    """``bench accuracy`` (here on small random stand-ins for MNIST / MNIST-M) trains every
    (seed, precision) pair for --steps steps and summarises mean and sample std per precision."""
    import dannlib.data

    def fake_load(name, split, root=None, n=None, seed=0, device=None, **kw):
        g = torch.Generator().manual_seed(sum(map(ord, name + split)))
        return torch.rand(64, 3, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)

    monkeypatch.setattr(dannlib.data, "load_domain", fake_load)
    out = tmp_path / "acc.json"
    assert bench.main(["accuracy", "--steps", "2", "--seeds", "0,1", "--n-train", "64", "--threads", "1",
                       "--out", str(out), "--no-progress"]) == 0
    rec = json.loads(out.read_text())
    assert [(r["seed"], r["precision"]) for r in rec["runs"]] == [(0, "fp32"), (0, "bf16"), (1, "fp32"), (1, "bf16")]
    for precision in ("fp32", "bf16"):
        accs = [r["target_test_acc"] for r in rec["runs"] if r["precision"] == precision]
        q = rec["summary"][precision]
        assert q["n"] == 2 and q["target_test_acc_mean"] == pytest.approx(statistics.fmean(accs))
        assert q["target_test_acc_std"] == pytest.approx(statistics.stdev(accs))
    assert rec["settings"]["steps"] == 2 and "bench accuracy" in rec["command"]


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert bench.main(["--steps", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "--steps" in capsys.readouterr().err
    assert bench.main(["--threads", "1,a", "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_baseline_step_is_the_dann_step():
    """The DataLoader baseline's hand-written step updates the weights exactly as
    dannlib's DANN.step does (same network, loss, GRL, optimiser and schedules), so the
    benchmark compares pipelines, not different computations."""
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 256, (64, 28, 28, 3), dtype=np.uint8)
    img_s, img_t, lab_s = img(), img(), rng.integers(0, 10, 64)
    base = bench.variants._DataLoaderBaseline(img_s, lab_s, img_t, torch.device("cpu"), seed=0, num_workers=0)
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div(255)
    source = Domain("s", to_t(img_s), torch.from_numpy(lab_s).long())
    target = Domain("t", to_t(img_t))
    dann = methods.DANN(methods.make_config("dann", batch_size=8), source, target, [0])
    net = dann.nets[0]
    missing = base.net.load_state_dict({k: v for k, v in net.state_dict().items() if k != "input_mean"})
    assert not missing.missing_keys and not missing.unexpected_keys
    xs, ys, xt = source.x[:8], source.y[:8], target.x[8:16]
    for p in (0.0, 0.3):
        loss = base.step(xs - net.input_mean, ys, xt - net.input_mean, p)
        parts = dann.update(xs, ys, xt, p)  # the loop sets the learning rate, then steps
        assert loss.item() == pytest.approx((parts["label_loss"] + parts["domain_loss"]).item(), rel=1e-5)
    moved = 0.0
    for (name, a), b in zip(base.net.named_parameters(), net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    for a, b in zip(base.net.parameters(), methods.DANN(dann.config, source, target, [0]).nets[0].parameters()):
        moved = max(moved, (a - b).abs().max().item())
    assert moved > 1e-4  # the two steps did change the weights


def test_channels_last_default_on_cpu_gives_the_same_training():
    """DANN's channels_last convolution weights (its CPU default for single-seed runs, a
    speed choice measured in benchmarks/README.md) train the same network as contiguous
    weights, to float tolerance, over several steps."""
    g = torch.Generator().manual_seed(0)
    source = Domain("s", torch.rand(64, 3, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))
    target = Domain("t", torch.rand(64, 3, 28, 28, generator=g))
    cfg = methods.make_config("dann", batch_size=16)
    fast = methods.DANN(cfg, source, target, [3])
    plain = methods.DANN(methods.make_config("dann", batch_size=16, channels_last=False), source, target, [3])
    conv = fast.nets[0].feature_extractor[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert plain.nets[0].feature_extractor[0].weight.is_contiguous()
    for step in range(4):
        xs, ys, xt = source.x[16 * step:16 * step + 16], source.y[16 * step:16 * step + 16], target.x[:16]
        a, b = fast.step(xs, ys, xt, step / 4), plain.step(xs, ys, xt, step / 4)
        torch.testing.assert_close(a["domain_loss"], b["domain_loss"], rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(fast.nets[0].named_parameters(), plain.nets[0].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def _conv_weights(method) -> list[torch.Tensor]:
    return [p for net in method.networks() for p in net.parameters() if p.dim() == 4 and p.shape[1] > 1]


@pytest.mark.parametrize("method", ["dann", "iimt"])
def test_a_contiguous_variant_has_contiguous_weights(method):
    """``channels_last=False`` reaches the method's config (``fit_contiguous``, ``iimt_contiguous``): the
    convolution weights stay contiguous, while the default variant (``fit``, ``iimt``) has them in
    channels_last on the CPU. (It once stayed a bench-only IIMT flag, and fit_contiguous timed fit.)"""
    *_, source, target = bench.variants._synthetic(torch.device("cpu"))
    default = bench.variants._FitVariant(method, source, target, [0])
    contiguous = bench.variants._FitVariant(method, source, target, [0], channels_last=False)
    assert contiguous.method.config.channels_last is False and default.method.config.channels_last is None
    assert _conv_weights(default.method) and _conv_weights(contiguous.method)
    for w in _conv_weights(default.method):
        assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    for w in _conv_weights(contiguous.method):
        assert w.is_contiguous()


def test_iimt_contiguous_row_and_its_ratio(tmp_path):
    """With IIMT timed, the record has the ``iimt_contiguous`` row and IIMT's channels_last gain is the
    quotient of the two rows' medians."""
    out = tmp_path / "b.json"
    assert bench.main(["--device", "cpu", "--steps", "1", "--repeats", "1", "--seeds", "1", "--warmup", "1",
                       "--threads", "1", "--num-workers", "0", "--precision", "fp32", "--methods", "dann,iimt",
                       "--out", str(out), "--no-progress"]) == 0
    rec = json.loads(out.read_text())
    rows = {r["variant"]: r for r in rec["measurements"]}
    assert set(rows) == {"dataloader", "fit", "fit_contiguous", "iimt", "iimt_contiguous"}
    q = rec["ratios_seed_steps"]["1"]
    assert q["iimt_over_iimt_contiguous"] == pytest.approx(rows["iimt"]["steps_per_s"] /
                                                           rows["iimt_contiguous"]["steps_per_s"])
    assert q["iimt_over_iimt_contiguous_cpu_time"] == pytest.approx(rows["iimt"]["cpu_steps_per_s"] /
                                                                    rows["iimt_contiguous"]["cpu_steps_per_s"])


def test_iimt_channels_last_default_gives_the_same_training():
    """IIMT's channels_last default on the CPU (the bench's ``iimt`` against ``iimt_contiguous``) is a
    memory-layout change only: after a few steps its weights equal the contiguous run's to float tolerance."""
    g = torch.Generator().manual_seed(1)
    source = Domain("s", torch.rand(64, 3, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))
    target = Domain("t", torch.rand(64, 3, 28, 28, generator=g))
    fast = bench.variants.build_method("iimt", source, target, [2], batch_size=16)
    plain = bench.variants.build_method("iimt", source, target, [2], channels_last=False, batch_size=16)
    assert fast.nets[0].feature_extractor[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.nets[0].feature_extractor[0].weight.is_contiguous()
    for step in range(3):
        xs, ys, xt = source.x[16 * step:16 * step + 16], source.y[16 * step:16 * step + 16], target.x[:16]
        fast.step(xs, ys, xt, step / 3)
        plain.step(xs, ys, xt, step / 3)
    for (name, p), q in zip(fast.nets[0].named_parameters(), plain.nets[0].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


# -- bench sweep: processes against threads ---------------------------------------------------
def _sweep_record(tmp_path, *extra):
    out = tmp_path / "sweep.json"
    threads = torch.get_num_threads()
    rc = bench.main(["sweep", "--data", "toy", "--runs", "2", "--steps", "4", "--cores", "2",
                     "--tmp-dir", str(tmp_path), "--out", str(out), "--no-progress", *extra])
    assert rc == 0
    assert torch.get_num_threads() == threads  # the thread setting is restored
    return json.loads(out.read_text())


def _check_sweep_numbers(rec, k):
    """Every number of the record follows from the recorded wall times."""
    for name, q in rec["variants"].items():
        secs = [r["variants"][name]["wall_seconds"] for r in rec["rounds"]]
        assert q["runs_per_minute_each_round"] == pytest.approx([k * 60 / s for s in secs])
        assert q["runs_per_minute"] == pytest.approx(statistics.median(k * 60 / s for s in secs))
    for a, b in (("processes", "threads"), ("processes", "serial"), ("threads", "serial")):
        rpm = lambda n: rec["variants"][n]["runs_per_minute"]
        assert rec["ratios"][f"{a}_over_{b}"] == pytest.approx(rpm(a) / rpm(b))
        assert rec["ratios"][f"{a}_over_{b}_each_round"] == pytest.approx(
            [rb["variants"][b]["wall_seconds"] / rb["variants"][a]["wall_seconds"] for rb in rec["rounds"]])
        for suffix in ("", "_in_run"):  # the median of the paired rounds' ratios, beside the ratio of the medians
            assert rec["ratios"][f"{a}_over_{b}{suffix}_median_of_rounds"] == pytest.approx(
                statistics.median(rec["ratios"][f"{a}_over_{b}{suffix}_each_round"]))
        inner = lambda n: rec["variants"][n]["in_run_runs_per_minute"]
        assert rec["ratios"][f"{a}_over_{b}_in_run"] == pytest.approx(inner(a) / inner(b))
    for name, q in rec["variants"].items():  # in-run: runs at once x 60 / mean seconds inside a run
        conc = [min(r["variants"][name]["workers"], k) for r in rec["rounds"]]
        inner = [c * 60 * len(r["variants"][name]["run_seconds"]) / sum(r["variants"][name]["run_seconds"])
                 for c, r in zip(conc, rec["rounds"])]
        assert q["in_run_runs_per_minute"] == pytest.approx(statistics.median(inner))


def test_sweep_mode_trains_the_same_runs_three_ways(tmp_path):
    """``bench sweep`` (real worker processes, toy-sized runs): each variant's fresh store ends
    with the same K finished runs (the keys of the specs asked for), trained at the thread
    count the variant claims (1 per worker process, 2 in-process, 1 in-process); the record
    holds the machine, the load averages, the command and ratios computed from its times."""
    rec = _sweep_record(tmp_path, "--repeats", "1")
    expected = sorted(s.key for s in bench.sweeps.sweep_specs("toy", 2, 4))
    assert sorted(rec["settings"]["keys"]) == expected and rec["complete"] is True
    (rnd,) = rec["rounds"]
    assert rnd["order"] == ["processes", "threads", "serial"]
    for name, threads in (("processes", 1), ("threads", 2), ("serial", 1)):
        v = rnd["variants"][name]
        assert v["keys"] == expected, name
        assert v["run_torch_threads"] == [threads, threads], name
        assert v["workers"] == (2 if name == "processes" else 1)
        assert v["wall_seconds"] > 0 and len(v["final_acc"]) == 2
    # the same seeds with one thread give the same runs, in a worker process or in this one
    assert rnd["variants"]["processes"]["final_acc"] == rnd["variants"]["serial"]["final_acc"]
    _check_sweep_numbers(rec, 2)
    assert rec["machine"]["cpu_count"] and "bench sweep" in rec["command"]
    assert len(rec["load_average"]["start"]) == 3 and len(rec["load_average"]["end"]) == 3
    assert not list(tmp_path.glob("bench-sweep-*"))  # the temporary stores are gone


def test_sweep_mode_interleaves_rounds_and_takes_medians(tmp_path, monkeypatch):
    """Several rounds (here with the sweep trained in this process, to stay fast): the order of
    the variants rotates round by round, and the medians and ratios are the recorded ones."""
    import dannlib.sweep

    real = dannlib.sweep.ensure

    def in_process(specs, **kw):
        out = real(specs, **{**kw, "workers": 1})
        in_process.last_summary = real.last_summary
        return out

    monkeypatch.setattr(dannlib.sweep, "ensure", in_process)
    rec = _sweep_record(tmp_path, "--repeats", "3")
    assert [r["order"][0] for r in rec["rounds"]] == ["processes", "threads", "serial"]
    assert all(sorted(r["order"]) == sorted(bench.sweeps.SWEEP_VARIANTS) for r in rec["rounds"])
    assert len(rec["load_average"]["after_each_round_1min"]) == 3
    _check_sweep_numbers(rec, 2)


def test_sweep_mode_fails_when_a_variant_leaves_runs_out(tmp_path, monkeypatch):
    """A variant whose store does not end with all K runs is an error, not a fast variant."""
    import dannlib.sweep

    real = dannlib.sweep.ensure

    def drops_one(specs, **kw):
        out = real(specs[:-1], **{**kw, "workers": 1})
        drops_one.last_summary = real.last_summary
        return out

    monkeypatch.setattr(dannlib.sweep, "ensure", drops_one)
    with pytest.raises(RuntimeError, match="1 finished runs"):
        _sweep_record(tmp_path, "--repeats", "1")
    assert not (tmp_path / "sweep.json").exists()


def test_sweep_mode_bad_arguments_exit_2(tmp_path, capsys):
    for bad in (["--runs", "0"], ["--cores", "1"], ["--steps", "-3"]):
        assert bench.main(["sweep", "--data", "toy", *bad, "--out", str(tmp_path / "x.json")]) == 2
        assert bad[0] in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


# -- benchmarks/pool_relu.py -------------------------------------------------------------------
def test_pool_relu_times_each_method_in_its_registered_precision(monkeypatch, tmp_path):
    """The ``dann_speedrun`` row runs in bf16 autocast, as the registered method does; ``dann`` in fp32;
    the record says which."""
    from benchmarks import pool_relu

    assert methods.make_config("dann_speedrun").precision == "bf16"
    built = []

    def recording(*args, **kwargs):
        v = bench.variants._FitVariant(*args, **kwargs)
        built.append((args[0], v.method.config.precision))
        return v

    monkeypatch.setattr(pool_relu, "METHODS", {"dann": (8, 3), "dann_speedrun": (8, 3)})
    monkeypatch.setattr(pool_relu, "_FitVariant", recording)
    out = tmp_path / "p.json"
    pool_relu.main(["--rounds", "1", "--steps", "1", "--out", str(out)])
    assert sorted(set(built)) == [("dann", "fp32"), ("dann_speedrun", "bf16")]
    results = json.loads(out.read_text())["results"]
    assert results["dann_speedrun"]["precision"] == "bf16" and results["dann"]["precision"] == "fp32"
