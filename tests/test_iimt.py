"""IIMT (dannlib.iimt): mixup helpers, switches, and divergence handling in fit/summary_table."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dannlib import methods
from dannlib.iimt import (ABLATIONS, COMPONENTS, IIMT, IIMTConfig, augment, consistency_loss, mix,
                          mixup_coefficient, sharpen)
from dannlib.records import summary_table
from dannlib.training import Domain, Method, fit
from dannlib.utils import make_generator

torch.set_num_threads(1)


def test_mixup_coefficient_at_least_half_and_seeded():
    for alpha in (0.2, 1.0, 2.0, 10.0):
        lam = mixup_coefficient(alpha, make_generator(0), (20_000,))
        assert lam.min() >= 0.5 and lam.max() <= 1.0
    lam = mixup_coefficient(2.0, make_generator(1), (20_000,))
    # E[max(l, 1 - l)] for l ~ Beta(2, 2) is 11/16 = 0.6875
    assert lam.mean().item() == pytest.approx(0.6875, abs=0.005)
    assert torch.equal(mixup_coefficient(2.0, make_generator(3), (5,)), mixup_coefficient(2.0, make_generator(3), (5,)))
    with pytest.raises(ValueError, match="alpha"):
        mixup_coefficient(0.0, make_generator(0))


def test_mixed_soft_labels_sum_to_one():
    g = make_generator(0)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (64,), generator=g), 10).float()
    q = sharpen(torch.rand(64, 10, generator=g), 0.5)
    lam = mixup_coefficient(2.0, g, (64,))
    q_st = mix(y, q, lam)
    assert torch.allclose(q_st.sum(-1), torch.ones(64), atol=1e-6)
    assert (q_st >= 0).all()
    # mix broadcasts a per-sample lambda over the image axes
    a, b = torch.ones(4, 3, 2, 2), torch.zeros(4, 3, 2, 2)
    lam4 = torch.tensor([0.5, 0.6, 0.9, 1.0])
    assert torch.allclose(mix(a, b, lam4)[:, 1, 1, 0], lam4)


def test_sharpen_limits():
    q = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    assert torch.allclose(sharpen(q, 1.0), q, atol=1e-6)
    hard = sharpen(q, 0.01)
    assert torch.allclose(hard, torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]), atol=1e-6)
    s = sharpen(q, 0.5)  # q^2 renormalised, by hand: [.25, .09, .04] / .38
    assert torch.allclose(s[0], torch.tensor([0.25, 0.09, 0.04]) / 0.38, atol=1e-6)
    with pytest.raises(ValueError, match="T"):
        sharpen(q, 0.0)


def test_consistency_zero_for_affine_nonzero_for_relu():
    g = make_generator(0)
    xs, xt = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    lam = mixup_coefficient(2.0, g, (16,))
    torch.manual_seed(0)
    affine = nn.Linear(8, 5)
    assert consistency_loss(affine, xs, xt, lam).item() < 1e-10
    assert consistency_loss(nn.Linear(8, 5, bias=False), xs, xt, lam).item() < 1e-10
    relu = nn.Sequential(nn.Linear(8, 5), nn.ReLU())
    assert consistency_loss(relu, xs, xt, lam).item() > 1e-3


def test_augment_stays_in_range_and_shifts():
    g = make_generator(0)
    x = torch.rand(8, 3, 28, 28, generator=g)
    a = augment(x, make_generator(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)
    assert torch.equal(a, augment(x, make_generator(1)))
    # with no jitter and no shift, augment is the identity
    assert torch.allclose(augment(x, make_generator(1), max_shift=0, contrast=0.0, brightness=0.0), x, atol=1e-6)


def _digits(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    xs = torch.rand(n, 3, 28, 28, generator=g) * 0.3
    for i in range(n):
        xs[i, :, 2 + 2 * int(y[i]), 4:24] = 1.0
    return Domain("src", xs, y), Domain("tgt", (1 - xs) * 0.8, None)


def _grads(config, p=0.8, seed=0):
    src, tgt = _digits()
    m = IIMT(config, src, tgt, [seed])
    net = m.nets[0]
    total, parts = m.objective(net, src.x[:16], src.y[:16], tgt.x[:16], p, m.generators[0])
    net.zero_grad()
    total.backward()
    return {k: v.grad.clone() for k, v in net.named_parameters() if v.grad is not None}, parts


@pytest.mark.parametrize("switch,weight", [
    ("inter_mixup", "w_inter"), ("target_dominated_mixup", "w_target_mix"), ("consistency", "w_consistency"),
    ("intra_source", "w_intra_source"), ("intra_target", "w_intra_target"),
])
def test_switched_off_component_contributes_zero_gradient(switch, weight):
    base = IIMTConfig(steps=10, batch_size=16)
    off, parts_off = _grads(IIMTConfig(**{**base.__dict__, switch: False}))
    zero_w, _ = _grads(IIMTConfig(**{**base.__dict__, weight: 0.0}))
    on, parts_on = _grads(base)
    assert len(parts_on) > len(parts_off)
    for k in on:
        assert torch.allclose(off[k], zero_w[k], atol=1e-6, rtol=1e-5), k
    assert any(not torch.allclose(off[k], on[k], atol=1e-6, rtol=1e-5) for k in on), \
        f"{switch} on and off give the same gradient: the component does nothing"


def test_adversarial_switch_removes_domain_gradient():
    base = IIMTConfig(steps=10, batch_size=16)
    off, parts = _grads(IIMTConfig(**{**base.__dict__, "adversarial": False}))
    on, parts_on = _grads(base)
    assert "domain_loss" in parts_on and "domain_loss" not in parts
    assert all(not k.startswith("domain_classifier") for k in off)  # no gradient reaches G_d
    assert any(k.startswith("domain_classifier") for k in on)


def test_ramp_starts_at_zero():
    base = IIMTConfig(steps=10, batch_size=16, intra_source=False, adversarial=False)
    at0, _ = _grads(base, p=0.0)
    only_label, _ = _grads(IIMTConfig(**{**base.__dict__, **{c: False for c in COMPONENTS}}), p=0.0)
    for k in at0:  # at p = 0 every target-involving weight is 0: only the source label loss acts
        assert torch.allclose(at0[k], only_label[k], atol=1e-6, rtol=1e-5), k


def test_registry_and_training_through_fit():
    src, tgt = _digits()
    assert set(ABLATIONS) <= set(methods.METHODS)
    assert methods.make_config("iimt_no_intra").intra_source is False
    res = methods.train("iimt_no_consistency", src, Domain("tgt", tgt.x, src.y), seeds=[0],
                        eval_sets={"t": Domain("t", tgt.x, src.y)}, progress=False, steps=3, batch_size=8)
    assert isinstance(res[0].method, IIMT) and res[0].final[0]["status"] == "ok"
    assert "consistency_loss" not in res[0].history[-1] and "inter_loss" in res[0].history[-1]
    for field, value in (("K", 0), ("T", 1.5), ("alpha", -1.0), ("ramp_end", 0.0), ("optimizer", "rmsprop"),
                         ("consistency", "yes")):
        with pytest.raises(ValueError, match=field):
            IIMTConfig(**{field: value}).validate()


class _NaNAfter(Method):
    """A method whose loss turns NaN after ``n`` steps (seed-dependent)."""

    name = "nan_after"

    def __init__(self, seeds, n):
        self.seeds, self.n, self.t = seeds, n, 0
        self.w = nn.Linear(4, 2)

    def step(self, xs, ys, xt, p):
        self.t += 1
        return {"loss": torch.tensor(float("nan") if self.t > self.n else 1.0)}

    def predict(self, x):
        return self.w(x)


def test_nan_loss_recorded_as_diverged_and_left_out_of_table():
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()
    d = Domain("d", x, y)
    bad = fit(_NaNAfter([0], 3), d, d, steps=20, batch_size=8, eval_sets={"t": d}, eval_every=2, progress=False)
    good = fit(_NaNAfter([1], 10_000), d, d, steps=20, batch_size=8, eval_sets={"t": d}, eval_every=2,
               progress=False)
    assert bad.final[0]["status"] == "diverged" and "non-finite" in bad.final[0]["message"]
    assert bad.history[-1]["step"] < 20  # the run stopped
    assert good.final[0]["status"] == "ok"
    records = [dict(r, method="m", t_acc=r["t_acc"]) for r in bad.final + good.final]
    records[0]["t_acc"] = 123.0  # a diverged seed's number must not reach the mean
    table = summary_table(records, "t_acc")
    assert table.loc["m", "failed"] == 1
    assert table.loc["m", "t_acc"].startswith(f"{good.final[0]['t_acc']:.4f}") and table.loc["m", "t_acc"].endswith("(1)")


def test_augment_translates_by_at_most_max_shift():
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    a = augment(x, make_generator(5), max_shift=2, contrast=0.0, brightness=0.0)
    assert torch.allclose(a.sum(dim=(1, 2, 3)), torch.ones(64), atol=1e-6)  # a pure shift keeps the pixel
    pos = a[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 28, pos % 28
    assert (rows - 14).abs().max() <= 2 and (cols - 14).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # many different shifts are drawn
