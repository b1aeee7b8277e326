"""CDAN's step against a hand computation: the multilinear (and randomised) conditioning, the
entropy weights of CDAN+E, the reversal on the features only and the prediction entering the
domain loss as a constant, all written out with plain torch ops on the method's own weights."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dannlib.methods import CDAN, make_config, train
from dannlib.methods.cdan import MultilinearMap, entropy_weight
from dannlib.training import Domain


def _domains(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, 2, (n,), generator=g)
    xs = torch.randn(n, 2, generator=g) + 2.0 * ys[:, None]
    xt = torch.randn(n, 2, generator=g) + 1.0
    return Domain("src", xs, ys), Domain("tgt", xt, None)


def _cdan(**cfg):
    src, tgt = _domains()
    m = CDAN(make_config("cdan", network="toy", steps=10, batch_size=8, **cfg), src, tgt, [0])
    for part in (m.nets[0], m.discs[0], m.maps[0]):
        part.double()
    return m, src.x[:8].double(), src.y[:8], tgt.x[:8].double()


def _hand_loss(m, xs, ys, xt, p, *, detach_g=True):
    """CDAN's loss for seed 0 from the definitions, with the reversal written as
    ``f_rev = -lam * f + (1 + lam) * f.detach()`` (value f, gradient -lam)."""
    net, disc, tmap, c = m.nets[0], m.discs[0], m.maps[0], m.config
    lam = 2 / (1 + math.exp(-c.gamma * p)) - 1
    f = net.feature_extractor(torch.cat([xs, xt]) - (0 if net.input_mean is None else net.input_mean))
    logits = net.label_predictor(f)
    label = -torch.log_softmax(logits[:8], -1)[torch.arange(8), ys].mean()
    g = torch.softmax(logits, -1)
    g = g.detach() if detach_g else g
    f_rev = -lam * f + (1 + lam) * f.detach()
    if tmap.randomized:
        h = (f_rev @ tmap.R_f) * (g @ tmap.R_g) / math.sqrt(tmap.R_f.shape[1])
    else:
        h = torch.stack([torch.outer(f_rev[i], g[i]).flatten() for i in range(16)])
    z = disc(h)[:, 0]
    d = torch.cat([torch.zeros(8), torch.ones(8)]).double()
    bce = -(d * F.logsigmoid(z) + (1 - d) * F.logsigmoid(-z))
    if c.entropy:
        ent = -(g.detach() * torch.log(g.detach())).sum(-1)
        w = 1 + torch.exp(-ent)
        w = torch.cat([w[:8] / w[:8].sum(), w[8:] / w[8:].sum()]) / 2
        domain = (w * bce).sum()
    else:
        domain = bce.mean()
    return label + domain, label, domain


@pytest.mark.parametrize("cfg", [{}, {"entropy": True}, {"conditioning": "randomized", "random_dim": 8}])
def test_cdan_loss_and_step_gradient_match_hand_computation(cfg):
    m, xs, ys, xt = _cdan(**cfg)
    p = 0.3
    total, parts = m.objective(0, xs, ys, xt, p)
    hand, label, domain = _hand_loss(m, xs, ys, xt, p)
    assert parts["label_loss"].item() == pytest.approx(label.item(), rel=1e-9)
    assert parts["domain_loss"].item() == pytest.approx(domain.item(), rel=1e-9)
    assert total.item() == pytest.approx(hand.item(), rel=1e-9)
    params = [*m.nets[0].named_parameters(), *(("disc." + k, v) for k, v in m.discs[0].named_parameters())]
    expected = dict(zip([k for k, _ in params], torch.autograd.grad(hand, [v for _, v in params])))
    m.step_one(0, xs, ys, xt, p)  # SGD leaves the step's gradient in .grad
    for k, prm in params:
        torch.testing.assert_close(prm.grad, expected[k], rtol=1e-7, atol=1e-12, msg=lambda e, k=k: f"{k}: {e}")


def test_prediction_enters_the_domain_loss_as_a_constant():
    """The label predictor gets the label loss's gradient only: with the prediction's graph kept,
    the hand gradient differs (so the test above has power on this point)."""
    m, xs, ys, xt = _cdan()
    p = 0.6
    head = list(m.nets[0].label_predictor.parameters())
    kept = torch.autograd.grad(_hand_loss(m, xs, ys, xt, p, detach_g=False)[0], head)
    label_only = torch.autograd.grad(_hand_loss(m, xs, ys, xt, p)[1], head)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(kept, label_only))
    m.step_one(0, xs, ys, xt, p)
    for prm, g in zip(head, label_only):
        torch.testing.assert_close(prm.grad, g, rtol=1e-7, atol=1e-12)


def test_multilinear_map_and_entropy_weight_by_hand():
    f, g = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.25, 0.75]])
    assert MultilinearMap(2, 2, False, 0)(f, g).tolist() == [[0.25, 0.75, 0.5, 1.5]]
    rnd = MultilinearMap(2, 2, True, 4)
    expected = (f @ rnd.R_f) * (g @ rnd.R_g) / 2
    torch.testing.assert_close(rnd(f, g), expected)
    # uniform prediction over 2 classes: H = log 2 -> 1 + 1/2; one-hot: H = 0 -> 2
    w = entropy_weight(torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    assert w.tolist() == pytest.approx([1.5, 2.0])


def test_paper_rule_picks_the_randomised_map_above_4096_inputs():
    src = Domain("src", torch.rand(8, 3, 28, 28), torch.arange(8) % 10)
    m = CDAN(make_config("cdan", steps=2, batch_size=4), src, Domain("tgt", torch.rand(8, 3, 28, 28), None), [0])
    assert m.maps[0].randomized and m.maps[0].out_features == 1024  # 768 features x 10 classes > 4096
    toy, _, _, _ = _cdan()
    assert not toy.maps[0].randomized and toy.maps[0].out_features == 8 * 2


def test_cdan_trains_through_the_registry_and_rejects_bad_settings():
    src, tgt = _domains(64)
    (r,) = train("cdan", src, tgt, seeds=[1], network="toy", steps=20, batch_size=16, progress=False,
                 eval_sets={"target_test": Domain("t", tgt.x, (tgt.x[:, 0] > 1).long())})
    assert r.status == "ok" and {"net", "discriminator", "map"} <= set(r.modules)
    assert {"label_loss", "domain_loss", "domain_acc", "grl_lambda"} <= set(r.history[-1])
    with pytest.raises(ValueError, match="conditioning"):
        make_config("cdan", conditioning="bilinear")
    with pytest.raises(ValueError, match="random_dim"):
        make_config("cdan", random_dim=0)


def test_auto_rule_randomises_only_above_the_limit(monkeypatch):
    """"auto" keeps the multilinear map at exactly the limit and randomises above it (the toy
    network: 8 features x 2 classes = 16 inputs)."""
    import dannlib.methods.cdan as cdan

    assert cdan.MULTILINEAR_LIMIT == 4096
    for limit, randomized in ((16, False), (15, True)):
        monkeypatch.setattr(cdan, "MULTILINEAR_LIMIT", limit)
        m, _, _, _ = _cdan()
        assert m.maps[0].randomized is randomized


def test_cdan_round_trips_through_the_run_store(tmp_path):
    """The store rebuilds CDAN's networks from a blank instance and loads the saved weights
    (the randomised map's fixed matrices included): the same predictions after loading."""
    from dannlib.store import RunSpec, Store, toy_data
    from dannlib.sweep import compute

    spec = RunSpec.make("cdan", toy_data("blobs", n=64, seed=0), 0, steps=4, batch_size=8,
                        network="toy", conditioning="randomized", random_dim=16, eval_every=2, monitor_size=32)
    store = Store(tmp_path)
    compute(spec, store, progress=False)
    loaded = store.get(spec).load_modules()
    blank = CDAN(make_config("cdan", **spec.config), *_domains(), [0])  # R drawn under the same seed
    torch.testing.assert_close(loaded["map"].R_f, blank.maps[0].R_f)
    assert loaded["map"].randomized and loaded["map"].R_f.shape == (8, 16)
    x = torch.randn(5, 2)
    trained = loaded["net"](x)
    assert not torch.equal(trained, blank.nets[0](x))  # the trained weights, not the blank ones
