"""MNIST -> MNIST-M on the CPU, small: what DANN's gradient reversal does to the domain
classifier, and the proxy A-distance (dannlib.evaluate).

The digits tests use the real data (skipped with the reason when it is absent): 2,000
MNIST and 2,000 MNIST-M training images, 200 steps of the paper's DANN recipe (SGD +
eq. 6/7), three seeds. The fact tested: with the reversal, the domain classifier G_d ends
near chance on held-out images, while the *same* classifier trained the same way on the
same features without reversal (lambda = 0: the features are those of source-only
training, the classifier just watches) tells the domains apart. With lambda = 0 or a
flipped reversal sign the two would not differ, or DANN's would be the higher.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dannlib.evaluate import features, proxy_a_distance
from dannlib.methods import train
from dannlib.training import Domain

SEEDS = (0, 1, 2)
STEPS = 200
N_TRAIN = 2000
N_TEST = 1000


# -- proxy A-distance --------------------------------------------------------------------

def test_pad_identical_distributions_is_near_zero():
    rng = np.random.default_rng(0)
    pads = [proxy_a_distance(rng.normal(size=(1000, 20)), rng.normal(size=(1000, 20)), seed=s)["pad"]
            for s in range(3)]
    assert abs(np.mean(pads)) < 0.2, pads


def test_pad_disjoint_distributions_is_near_two():
    rng = np.random.default_rng(1)
    fs = rng.normal(size=(500, 20))
    ft = rng.normal(size=(500, 20)) + 6.0  # far apart along every axis: linearly separable
    out = proxy_a_distance(fs, ft, seed=0)
    assert out["err"] == 0.0 and out["pad"] == 2.0
    assert out["n_train"] == 500 and out["n_test"] == 500


def test_pad_orders_partial_overlap_between_the_extremes():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(1000, 10))
    shifted = rng.normal(size=(1000, 10))
    pads = [proxy_a_distance(base, shifted + d, seed=0)["pad"] for d in (0.0, 0.3, 1.0)]
    assert pads[0] < pads[1] < pads[2] < 2.0


def test_pad_keeps_the_lowest_held_out_error_over_its_c_grid_and_the_probe_uses_c_1():
    from dannlib.evaluate import PAD_C_GRID, domain_probe_accuracy
    rng = np.random.default_rng(3)
    fs, ft = rng.normal(size=(400, 200)), rng.normal(size=(400, 200)) + 0.08  # a small shift in many dimensions
    single = {c: proxy_a_distance(fs, ft, seed=0, C=c)["err"] for c in PAD_C_GRID}
    out = proxy_a_distance(fs, ft, seed=0)
    assert out["err"] == min(single.values()) and single[out["C"]] == out["err"]
    assert len(set(single.values())) > 1  # the grid matters here: one C alone would report another distance
    assert domain_probe_accuracy(fs, ft, seed=0) == 1.0 - single[1.0]


def test_pad_rejects_bad_input():
    with pytest.raises(ValueError, match="fs and ft"):
        proxy_a_distance(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ValueError, match="C"):
        proxy_a_distance(np.zeros((10, 3)), np.ones((10, 3)), C=0)


# -- DANN on MNIST -> MNIST-M ------------------------------------------------------------

@pytest.fixture(scope="module")
def digits(real_data_root):
    from dannlib.data import load_domain

    kw = dict(root=real_data_root, device="cpu")
    xs, ys = load_domain("mnist", "train", n=N_TRAIN, seed=0, **kw)
    xt, _ = load_domain("mnist_m", "train", n=N_TRAIN, seed=0, **kw)
    xs_test, _ = load_domain("mnist", "test", n=N_TEST, seed=0, **kw)
    xt_test, _ = load_domain("mnist_m", "test", n=N_TEST, seed=1, **kw)
    return Domain("mnist", xs, ys), Domain("mnist_m", xt), xs_test, xt_test


@torch.no_grad()
def _domain_classifier_accuracy(net, xs, xt) -> float:
    """Held-out accuracy of the network's own G_d (logit > 0 means target), balanced."""
    net.eval()
    ds = net.domain_classifier(net.features(xs)).squeeze(-1)
    dt = net.domain_classifier(net.features(xt)).squeeze(-1)
    return 0.5 * ((ds <= 0).double().mean() + (dt > 0).double().mean()).item()


@pytest.fixture(scope="module")
def dann_vs_watching(digits):
    """For each seed: G_d's held-out accuracy and the features' PAD, for DANN and for the
    same run with lambda = 0 (G_d trained on source-only features, no reversal)."""
    source, target, xs_test, xt_test = digits
    out = {"dann": [], "lambda0": []}
    for name, extra in (("dann", {}), ("lambda0", {"lambda_max": 0.0})):
        for res in train("dann", source, target, seeds=SEEDS, steps=STEPS, progress=False, **extra):
            net = res.modules["net"]
            pad = proxy_a_distance(features(net, xs_test), features(net, xt_test), seed=res.seed)["pad"]
            out[name].append({"gd_acc": _domain_classifier_accuracy(net, xs_test, xt_test), "pad": pad,
                              "status": res.status})
    return out


def test_dann_drives_its_domain_classifier_towards_chance(dann_vs_watching):
    dann = [r["gd_acc"] for r in dann_vs_watching["dann"]]
    watching = [r["gd_acc"] for r in dann_vs_watching["lambda0"]]
    assert all(r["status"] == "ok" for rs in dann_vs_watching.values() for r in rs)
    # Without reversal the same G_d separates the domains of held-out images well ...
    # (measured, seeds 0-2: 0.871, 0.885, 0.883) ...
    assert np.mean(watching) > 0.8, watching
    # ... with it, it ends close to chance (0.5) for the mean over seeds (measured: 0.568,
    # 0.500, 0.509; with the reversal's sign flipped: 0.941, 0.954, 0.949).
    assert np.mean(dann) < np.mean(watching) - 0.2, (dann, watching)
    assert np.mean(dann) < 0.7, dann


def test_source_only_features_stay_separable_by_domain(dann_vs_watching):
    # lambda = 0 leaves the features those of source-only training: a linear probe tells
    # MNIST from MNIST-M test images almost perfectly (PAD near 2; measured 1.91-1.94).
    # (At this scale DANN's features are not yet *linearly* inseparable either: their PAD
    # measured 1.90-1.92, so no ordering of the PADs is asserted here; notebook 04 shows it
    # for the longer runs of notebook 03.)
    pads = [r["pad"] for r in dann_vs_watching["lambda0"]]
    assert min(pads) > 1.7, pads


def test_pad_is_scored_on_the_held_out_half():
    """500 noise dimensions, 100 points a domain, hardly any regularisation: a classifier fits its training half
    perfectly (PAD 2 if scored there) but is at chance on the held-out half (PAD about 0)."""
    rng = np.random.default_rng(5)
    out = proxy_a_distance(rng.normal(size=(100, 500)), rng.normal(size=(100, 500)), C=(1e4,))
    assert out["pad"] < 1.0


class _ConstantDomainLogit(torch.nn.Module):
    """A ``DANNNet`` stand-in whose domain logit is ``value`` for every input (no class logits used)."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x, lam):
        return torch.zeros(len(x), 10), torch.full((len(x),), self.value)


def test_domain_accuracy_by_hand():
    """3 source and 5 target points: always "target" is right on the 5 target points (5/8), always "source" on
    the 3 source points (3/8)."""
    from dannlib.evaluate import domain_accuracy
    xs, xt = torch.zeros(3, 2), torch.ones(5, 2)
    assert domain_accuracy(_ConstantDomainLogit(1.0), xs, xt) == 5 / 8
    assert domain_accuracy(_ConstantDomainLogit(-1.0), xs, xt) == 3 / 8
