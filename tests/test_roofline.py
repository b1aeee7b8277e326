"""benchmarks/roofline.py counts a run's training FLOPs: checked against the digits network's operations by hand."""
from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode

from benchmarks import roofline
from dannlib.store import RunSpec

# REFERENCE §1's digits network on a 3 x 28 x 28 image, forward: conv 5x5x32 on 24x24 outputs (75 multiply-adds
# each), conv 5x5x48 on 8x8 outputs (800 each); label head 768 -> 100 -> 100 -> 10, domain head 768 -> 100 -> 1.
CONV_FORWARD = 2 * (24 * 24 * 32 * 75 + 8 * 8 * 48 * 800)
LABEL_HEAD, DOMAIN_HEAD = 2 * (768 * 100 + 100 * 100 + 100 * 10), 2 * (768 * 100 + 100 * 1)

DATA = {"kind": "digits", "source": "mnist", "target": "mnist_m", "channels": 3, "size": 28}


def test_a_dann_step_counts_the_networks_operations_by_hand():
    source, target = roofline._tiny_data(DATA)
    from benchmarks.bench.variants import _FitVariant
    v = _FitVariant("dann", source, target, [0])
    v.run(1)
    with FlopCounterMode(display=False) as counter:
        v.run(1)
    counts = {str(k): n for k, n in counter.get_flop_counts()["Global"].items()}
    assert counts["aten.convolution"] == 64 * CONV_FORWARD  # 32 source + 32 target images
    # both heads read all 64 feature rows (the label loss keeps the source rows)
    assert counts["aten.addmm"] == 64 * (LABEL_HEAD + DOMAIN_HEAD)


def test_run_flops_is_steps_times_one_step_and_drops_one_off_work():
    spec = RunSpec.make("dann", DATA, 0, steps=7, eval_every=7)
    per_step = roofline.run_flops(spec) / 7
    longer = roofline.run_flops(RunSpec.make("dann", DATA, 0, steps=70, eval_every=70))
    assert longer == 70 * per_step
    assert per_step > 64 * CONV_FORWARD  # forward and backward
    # ADDA's stage 2 after its inline one-step pre-training: were that step counted, 10 steps would not be 2 x 5
    adda = [roofline.run_flops(RunSpec.make("adda_gan", {**DATA, "channels": 1}, 0, steps=n, pretrain_steps=9))
            for n in (5, 10)]
    assert adda[1] == 2 * adda[0] > 0
