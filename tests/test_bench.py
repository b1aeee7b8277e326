"""``python -m dannlib bench`` (dannlib.bench): a tiny invocation writes a complete JSON
record; the baseline's hand-written step is the DANN step. No speed assertions: speed is
compared as ratios inside one benchmark run, never as limits in tests."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dannlib import bench, methods
from dannlib.training import Domain


def test_tiny_benchmark_writes_a_valid_record(tmp_path):
    out = tmp_path / "b.json"
    threads = torch.get_num_threads()
    rc = bench.main(["--device", "cpu", "--steps", "2", "--repeats", "1", "--seeds", "2", "--warmup", "1",
                     "--num-workers", "1", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert torch.get_num_threads() == threads  # the thread setting is restored
    rec = json.loads(out.read_text())
    for key in ("machine", "device", "torch", "torchvision", "threads", "settings", "measurements",
                "ratios_seed_steps", "load_average_1min", "setup_seconds"):
        assert key in rec, key
    assert rec["device"] == "cpu" and rec["settings"]["seeds_K"] == 2 and rec["settings"]["steps"] == 2
    rows = {r["variant"]: r for r in rec["measurements"]}
    assert set(rows) == {"dataloader", "fit", "fit_contiguous", "fit_together", "fit_separate"}
    for r in rows.values():
        assert math.isfinite(r["steps_per_s"]) and r["steps_per_s"] > 0
        assert r["seed_steps_per_s"] == pytest.approx(r["steps_per_s"] * r["seeds"])
        assert r["images_per_s"] == pytest.approx(r["seed_steps_per_s"] * 2 * bench.BATCH)
    assert rows["fit_together"]["seeds"] == 2 and rows["fit"]["seeds"] == 1
    # one timed round of --steps steps for each measured variant
    for name in ("dataloader", "fit", "fit_contiguous", "fit_together"):
        assert len(rows[name]["seconds_each_round"]) == 1
        assert rows[name]["steps_per_s"] == pytest.approx(2 / rows[name]["seconds_each_round"][0])
    q = rec["ratios_seed_steps"][str(threads)]
    assert q["b_over_a"] == pytest.approx(rows["fit"]["seed_steps_per_s"] / rows["dataloader"]["seed_steps_per_s"])
    assert q["c_is"] in ("fit_together", "fit_separate")
    assert q["c_over_b"] >= 1.0 - 1e-12  # (c) is the faster multi-seed mode, and separate equals (b)


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
    base = bench._DataLoaderBaseline(img_s, lab_s, img_t, torch.device("cpu"), seed=0, num_workers=0)
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
        parts = dann.step(xs, ys, xt, p)
        assert loss.item() == pytest.approx((parts["label_loss"] + parts["domain_loss"]).item(), rel=1e-5)
    moved = 0.0
    for (name, a), b in zip(base.net.named_parameters(), net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    for a, b in zip(base.net.parameters(), methods.DANN(dann.config, source, target, [0]).nets[0].parameters()):
        moved = max(moved, (a - b).abs().max().item())
    assert moved > 1e-4  # the two steps did change the weights


def test_compile_is_refused_for_seeds_trained_together():
    src = Domain("s", torch.randn(32, 2), torch.randint(0, 2, (32,)))
    tgt = Domain("t", torch.randn(32, 2))
    cfg = methods.make_config("dann", network="toy", compile=True, batch_size=8)
    with pytest.raises(ValueError, match="compile"):
        methods.DANN(cfg, src, tgt, [0, 1])


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
