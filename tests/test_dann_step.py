"""One DANN step computed by hand (plain torch ops on the same weights, no dannlib.grl) and
compared with ``dann_objective`` + backward and with ``DANN.step`` (SGD, momentum, eq. 6/7)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dannlib import networks
from dannlib.methods import DANN, make_config
from dannlib.methods.common import dann_objective
from dannlib.schedules import annealed_lr, grl_lambda
from dannlib.toys import make_blobs_shift
from dannlib.training import Domain
from dannlib.utils import seeded

# toy_net parameter names, by part of the network
FEATURE = ["feature_extractor.0.weight", "feature_extractor.0.bias"]
LABEL = ["label_predictor.weight", "label_predictor.bias"]
DOMAIN = ["domain_classifier.0.weight", "domain_classifier.0.bias",
          "domain_classifier.2.weight", "domain_classifier.2.bias"]


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n, 2, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 2, (n,), generator=g)
    xt = torch.randn(n, 2, generator=g, dtype=torch.float64) + 1.0
    return xs, ys, xt


def hand_losses(w: dict, xs, ys, xt):
    """Label CE on source and domain BCE on source (0) + target (1), written out with plain
    ops: G_f = relu(x W0^T + b0), G_y = linear, G_d = linear -> relu -> linear (one logit)."""
    def g_f(x):
        return torch.relu(x @ w[FEATURE[0]].T + w[FEATURE[1]])

    def g_d(h):
        z = torch.relu(h @ w[DOMAIN[0]].T + w[DOMAIN[1]])
        return (z @ w[DOMAIN[2]].T + w[DOMAIN[3]])[:, 0]

    hs, ht = g_f(xs), g_f(xt)
    logits = hs @ w[LABEL[0]].T + w[LABEL[1]]
    label = -torch.log_softmax(logits, 1)[torch.arange(len(ys)), ys].mean()
    d_logit = torch.cat([g_d(hs), g_d(ht)])
    d = torch.cat([torch.zeros(len(xs), dtype=xs.dtype), torch.ones(len(xt), dtype=xs.dtype)])
    # BCE with logits: -[d log s(z) + (1-d) log(1-s(z))]
    domain = -(d * F.logsigmoid(d_logit) + (1 - d) * F.logsigmoid(-d_logit)).mean()
    return label, domain


def hand_gradients(net, xs, ys, xt, lam, mode="dann"):
    w = {k: v.detach().clone().to(xs.dtype).requires_grad_(True) for k, v in net.named_parameters()}
    label, domain = hand_losses(w, xs, ys, xt)
    names = list(w)
    g_label = dict(zip(names, torch.autograd.grad(label, [w[k] for k in names], allow_unused=True,
                                                  retain_graph=True)))
    g_domain = dict(zip(names, torch.autograd.grad(domain, [w[k] for k in names], allow_unused=True)))
    z = {k: torch.zeros_like(v) for k, v in w.items()}
    gl = {k: g_label[k] if g_label[k] is not None else z[k] for k in names}
    gd = {k: g_domain[k] if g_domain[k] is not None else z[k] for k in names}
    if mode == "domain_only":
        # reversal switched off: every part descends the domain loss
        expected = {k: gd[k] for k in names}
        total = domain
    else:
        expected = {}
        for k in FEATURE:
            expected[k] = gl[k] - lam * gd[k]     # d(label)/d theta_f - lambda d(domain)/d theta_f
        for k in LABEL:
            expected[k] = gl[k]
        for k in DOMAIN:
            expected[k] = gd[k]                   # the domain classifier minimises its loss
        total = label + domain
    return total.detach(), label.detach(), domain.detach(), expected, gd


def _toy_net():
    with seeded(3):
        return networks.toy_net(2, hidden=8).double()


@pytest.mark.parametrize("lam", [0.0, 0.37, 1.0])
def test_dann_objective_matches_hand_computation(lam):
    net = _toy_net()
    xs, ys, xt = _batch()
    total, label, domain, expected, gd = hand_gradients(net, xs, ys, xt, lam)
    got, parts = dann_objective(net, xs, ys, xt, lam, "dann")
    torch.testing.assert_close(got.detach(), total, rtol=1e-12, atol=0)
    torch.testing.assert_close(parts["label_loss"], label, rtol=1e-12, atol=0)
    torch.testing.assert_close(parts["domain_loss"], domain, rtol=1e-12, atol=0)
    got.backward()
    for name, prm in net.named_parameters():
        torch.testing.assert_close(prm.grad, expected[name], rtol=1e-10, atol=1e-14, msg=name)
    if lam > 0:
        # the reversal really acts on the feature extractor: + sign would be different
        wrong = expected[FEATURE[0]] + 2 * lam * gd[FEATURE[0]]
        assert not torch.allclose(net.feature_extractor[0].weight.grad, wrong)


def test_domain_only_gives_features_the_plus_gradient():
    net = _toy_net()
    xs, ys, xt = _batch(seed=1)
    total, _, domain, expected, gd = hand_gradients(net, xs, ys, xt, -1.0, mode="domain_only")
    got, _ = dann_objective(net, xs, ys, xt, -1.0, "domain_only")
    torch.testing.assert_close(got.detach(), domain, rtol=1e-12, atol=0)
    got.backward()
    for name in FEATURE + DOMAIN:
        torch.testing.assert_close(dict(net.named_parameters())[name].grad, gd[name], rtol=1e-10, atol=1e-14)
    assert gd[FEATURE[0]].abs().sum() > 0
    for name in LABEL:  # the label predictor is not trained in this mode
        g = dict(net.named_parameters())[name].grad
        assert g is None or torch.count_nonzero(g) == 0


def test_dann_step_is_sgd_momentum_with_eq7_lr():
    problem = make_blobs_shift(n=64, seed=0)
    source = Domain("s", torch.tensor(problem.xs), torch.tensor(problem.ys))
    target = Domain("t", torch.tensor(problem.xt))
    cfg = make_config("dann", network="toy", steps=10, batch_size=16, lr=0.05, momentum=0.9)
    method = DANN(cfg, source, target, seeds=[5])
    net = method.nets[0]
    xs1, ys1, xt1 = source.x[:16], source.y[:16], target.x[:16]
    xs2, ys2, xt2 = source.x[16:32], source.y[16:32], target.x[16:32]
    p1, p2 = 0.3, 0.4
    w0 = {k: v.detach().clone() for k, v in net.named_parameters()}

    _, _, _, g1, _ = hand_gradients(net, xs1.double(), ys1, xt1.double(), grl_lambda(p1))
    method.update(xs1, ys1, xt1, p1)
    lr1 = annealed_lr(p1, 0.05)
    assert method.optimizer.param_groups[0]["lr"] == lr1
    # first SGD step with momentum: buffer = g, update = lr * g
    w1 = {k: w0[k] - lr1 * g1[k].float() for k in w0}
    for name, prm in net.named_parameters():
        torch.testing.assert_close(prm.detach(), w1[name], rtol=1e-5, atol=1e-6, msg=name)

    w1 = {k: v.detach().clone() for k, v in net.named_parameters()}
    _, _, _, g2, _ = hand_gradients(net, xs2.double(), ys2, xt2.double(), grl_lambda(p2))
    method.update(xs2, ys2, xt2, p2)
    lr2 = annealed_lr(p2, 0.05)
    # second step: buffer = 0.9 * g1 + g2
    for name, prm in net.named_parameters():
        buf = 0.9 * g1[name] + g2[name]
        torch.testing.assert_close(prm.detach(), w1[name] - lr2 * buf.float(), rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_the_configs_reversal_weight_by_hand(p):
    """07's grid settings through the config: lambda_max scales eq. 6, "constant" holds lambda_max from the start
    (0 is the no-reversal control), and domain_only flips the sign to -1."""
    import math

    eq6 = 2 / (1 + math.exp(-10 * p)) - 1
    assert make_config("dann", lambda_max=0.1).grl_lambda_at(p) == pytest.approx(0.1 * eq6, rel=1e-12)
    assert make_config("dann", lambda_max=0.3, lambda_schedule="constant").grl_lambda_at(p) == 0.3
    assert make_config("dann", lambda_max=0.0, lambda_schedule="constant").grl_lambda_at(p) == 0.0
    assert make_config("domain_only").grl_lambda_at(p) == -1.0
