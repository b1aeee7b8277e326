"""benchmarks/peer/run_peer.py (issue 22): the skip path when the peer is absent, the
arithmetic of its table on fake timings, and, where pytorch-adapt is installed in
benchmarks/peer/.peer-packages (never by these tests), that the peer's loop descends the
same objective as :meth:`dannlib.methods.DANN.step`. No wall-clock assertion."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "peer" / "run_peer.py"


@pytest.fixture(scope="module")
def run_peer():
    spec = importlib.util.spec_from_file_location("run_peer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_absent_peer_is_one_line_skip_exit_0_and_a_table_saying_why(run_peer, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "peer-bench.png").write_bytes(b"a figure of an earlier run")
    rc = run_peer.main(["--peer-dir", str(tmp_path / "absent"), "--out-dir", str(out)])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skipped: pytorch-adapt is not installed in ")
    assert f"skipped: pytorch-adapt is not installed in {tmp_path / 'absent'}" in (out / "peer-bench.md").read_text()
    record = json.loads((out / "peer-bench.json").read_text())
    assert record["status"] == "skipped" and record["reason"] == lines[0].removeprefix("skipped: ")
    assert not (out / "peer-bench.png").exists()  # no figure of another run beside a skipped table


def test_a_folder_with_other_versions_than_the_pins_is_refused(run_peer, tmp_path):
    (tmp_path / "pytorch_adapt").mkdir()
    assert "does not hold the versions pinned" in run_peer.peer_problem(tmp_path)
    (tmp_path / run_peer.STAMP).write_text("pytorch-adapt==0.0.1\n")
    assert "does not hold the versions pinned" in run_peer.peer_problem(tmp_path)
    (tmp_path / run_peer.STAMP).write_text(run_peer.REQUIREMENTS.read_text())
    assert run_peer.peer_problem(tmp_path) is None
    assert "installs into" in run_peer.install_peer(tmp_path)  # --install never writes elsewhere


def test_every_requirement_is_pinned_to_one_version(run_peer):
    pins = run_peer.pinned()
    assert {"pytorch-adapt", "torchmetrics", "pytorch-metric-learning"} <= set(pins)
    assert pins["torchmetrics"] == "0.9.3" and pins["pytorch-metric-learning"] == "1.6.3"
    assert all(v and v[0].isdigit() for v in pins.values()), pins
    assert "torch" not in pins  # the project's torch, never a second one


def _fake_record(run_peer) -> dict:
    sides = {"dannlib": {**run_peer.rates(500, 10.0, 8.0), "target_test_acc": 0.41, "source_test_acc": 0.93,
                         "load_average_1min": [1.0, 1.5]},
             "pytorch-adapt": {**run_peer.rates(500, 25.0, 16.0), "target_test_acc": 0.40, "source_test_acc": 0.92,
                               "load_average_1min": [1.5, 2.0]}}
    return {"status": "ok", "created": "2026-12-01T00:00:00+00:00",
            "machine": {"cpu_model": "AMD EPYC", "cpu_count": 2, "torch": "2.14.1", "torch_threads": 1},
            "versions": {"pytorch-adapt": "0.0.83"},
            "settings": {"steps": 500, "seed": 0, "batch_size": 32, "n_train": 20000, "source": "mnist",
                         "target": "mnist_m_released"},
            "sides": sides, "ratios": run_peer.ratios(sides)}


def test_rates_and_ratios_on_fake_timings(run_peer):
    r = run_peer.rates(500, 10.0, 8.0)
    assert r == {"steps_per_s": 50.0, "steps_per_cpu_s": 62.5}
    q = _fake_record(run_peer)["ratios"]
    assert set(q) == {"pytorch-adapt"}  # dannlib is the numerator, not a row of its own
    assert q["pytorch-adapt"] == pytest.approx({"wall": 50.0 / 20.0, "cpu": 62.5 / 31.25})


def test_table_and_figure_are_built_from_the_record(run_peer, tmp_path):
    record = _fake_record(run_peer)
    run_peer.write_outputs(record, tmp_path)
    table = (tmp_path / "peer-bench.md").read_text()
    assert "AMD EPYC, 2 cores, torch 2.14.1, 1 thread(s)" in table and "500 steps per side" in table
    assert "| dannlib | 50.0 | 62.5 | 0.4100 | 0.9300 | 1 | 1 | 1.0 -> 1.5 |" in table
    assert "| pytorch-adapt | 20.0 | 31.2 | 0.4000 | 0.9200 | 2.50 | 2.00 | 1.5 -> 2.0 |" in table
    assert (tmp_path / "peer-bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "peer-bench.json").read_text())["ratios"] == record["ratios"]


def test_the_peer_loop_descends_dannlibs_objective(run_peer):
    """Where the peer is installed: four steps of pytorch-adapt's DANNHook (SumWeighter 1,
    1/2, 1/2, its GradientReversal at eq. 6's lambda) on the same network, batches and
    schedules leave the same weights as four DANN.step calls. Lambda is 0 at the first step
    only, so a wrong sign or weight of the reversal, or the peer's default mean of the three
    losses, would move the weights elsewhere."""
    pa, reason = run_peer.import_peer(run_peer.PEER_DIR)
    if pa is None:
        pytest.skip(reason)
    from dannlib.methods import DANN, make_config
    from dannlib.training import Batches, Domain

    g = torch.Generator().manual_seed(0)
    source = Domain("s", torch.rand(48, 3, 28, 28, generator=g), torch.randint(0, 10, (48,), generator=g))
    target = Domain("t", torch.rand(48, 3, 28, 28, generator=g))
    steps = 4
    config = make_config("dann", steps=steps, batch_size=8, channels_last=False)
    ours = DANN(config, source, target, [0])
    start = {k: v.clone() for k, v in ours.nets[0].state_dict().items()}
    batches = Batches(source, target, [0], 8)
    for i in range(steps):
        ours.update(*batches.next(), i / steps)
    peer_net = run_peer.build_network(source, target, 0)
    step, _ = run_peer.peer_trainer(pa, peer_net, config, channels_last=False)
    batches = Batches(source, target, [0], 8)
    for i in range(steps):
        step(*batches.next(), i / steps)
    theirs = peer_net.state_dict()
    for name, w in ours.nets[0].state_dict().items():
        if name != "input_mean":
            assert not torch.allclose(w, start[name]), f"{name} did not move"
        torch.testing.assert_close(theirs[name], w, rtol=1e-4, atol=1e-6, msg=name)
