"""IIMT (dannlib.methods.iimt): mixup helpers and augmentation, each term of the objective
on its calibrated scale against a hand computation, the weighted total with the ramp,
the switches, training through ``train``, and divergence handling in fit/summary_table."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dannlib import methods
from dannlib.methods.iimt import (ABLATIONS, COMPONENTS, IIMT, IIMTConfig, augment, consistency_loss, mix,
                                  mixup_coefficient, sharpen, soft_cross_entropy, soft_squared_error)
from dannlib.results import summary_table
from dannlib.schedules import linear_ramp
from dannlib.training import Domain, Method, accuracy, fit
from dannlib.utils import make_generator


# -- helpers ------------------------------------------------------------------------------
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


def test_mix_puts_lambda_on_the_first_argument():
    # inter-domain soft label q_st = lam' y_s + (1 - lam') q_t, lam' = 0.7 >= 0.5: the source dominates
    y_s = torch.tensor([[1.0, 0.0, 0.0]])
    q_t = torch.tensor([[0.2, 0.3, 0.5]])
    q_st = mix(y_s, q_t, torch.tensor([0.7]))
    torch.testing.assert_close(q_st, torch.tensor([[0.76, 0.09, 0.15]]))
    assert q_st.argmax().item() == 0  # the source's class wins
    assert mix(torch.tensor(2.0), torch.tensor(10.0), 0.75).item() == pytest.approx(4.0)


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


# -- each term on its calibrated scale, by hand --------------------------------------------
def test_soft_cross_entropy_sums_over_classes_then_batch_mean():
    # softmax(logits) = (1/2, 1/4, 1/4) for both rows
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]], dtype=torch.float64))
    q = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    per_sample = [math.log(2), 0.5 * math.log(2) + 0.5 * math.log(4)]        # 0.6931, 1.0397
    assert soft_cross_entropy(logits, q).item() == pytest.approx(sum(per_sample) / 2, rel=1e-12)
    # a one-hot label gives the ordinary cross-entropy
    y = torch.tensor([0, 2])
    assert soft_cross_entropy(logits, F.one_hot(y, 3).double()).item() == pytest.approx(
        F.cross_entropy(logits, y).item(), rel=1e-12)


def test_soft_squared_error_sums_over_classes_then_batch_mean():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # per sample: (1-0)^2 + (0-1)^2 = 2 (the maximum); (0.5-1)^2 + (0.5-0)^2 = 0.5
    assert soft_squared_error(p[:1], q[:1]).item() == pytest.approx(2.0)
    assert soft_squared_error(p, q).item() == pytest.approx((2.0 + 0.5) / 2)  # F.mse_loss: 0.625
    assert soft_squared_error(q, q).item() == 0.0


def test_consistency_averages_over_feature_dims_then_batch_mean():
    fs = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0]])
    ft = torch.zeros(2, 4)
    fst = torch.zeros(2, 4)
    lam = torch.tensor([0.5, 1.0])
    # sample 0: diff 0.5 in each of 4 dims -> 0.25 mean square; sample 1: diff (2, 0, 0, 0) -> 4 / 4 = 1
    got = consistency_loss(None, None, None, lam, features=(fs, ft, fst))
    assert got.item() == pytest.approx((0.25 + 1.0) / 2)
    # lambda weighs f(x_s): with lambda and 1 - lambda swapped sample 0 is unchanged, sample 1 gives 0
    assert consistency_loss(None, None, None, 1 - lam, features=(fs, ft, fst)).item() == pytest.approx(0.125)


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


# -- augmentation ---------------------------------------------------------------------------
def _shifted(img, dr, dc):
    """``img (C, H, W)`` translated by (dr, dc) pixels with the edges replicated, by hand."""
    _, h, w = img.shape
    rows = (torch.arange(h) - dr).clamp(0, h - 1)
    cols = (torch.arange(w) - dc).clamp(0, w - 1)
    return img[:, rows][:, :, cols]


@pytest.mark.parametrize("k", [1, 3])
def test_augment_pure_shift_is_a_replicated_translation(k):
    """contrast = brightness = 0: each image is its own translation by at most k pixels,
    edges replicated. A marker channel (one bright pixel at the centre) reveals the shift."""
    g = make_generator(0)
    n, s = 64, 12
    x = torch.zeros(n, 2, s, s)
    x[:, 0] = torch.rand(n, s, s, generator=g)
    x[:, 1, s // 2, s // 2] = 1.0
    a = augment(x, make_generator(7), max_shift=k, contrast=0.0, brightness=0.0)
    seen = set()
    for i in range(n):
        pos = int(a[i, 1].argmax())
        dr, dc = pos // s - s // 2, pos % s - s // 2
        assert abs(dr) <= k and abs(dc) <= k
        seen.add((dr, dc))
        torch.testing.assert_close(a[i], _shifted(x[i], dr, dc), rtol=0, atol=1e-6)
    assert {d for d, _ in seen} == set(range(-k, k + 1))  # every shift in [-k, k] is drawn, both ends
    assert {d for _, d in seen} == set(range(-k, k + 1))


def test_augment_contrast_and_brightness():
    g = make_generator(0)
    x = 0.3 + 0.4 * torch.rand(32, 3, 10, 10, generator=g)  # in [0.3, 0.7]: no clamping below
    # brightness only: a constant per-image offset within +- brightness
    b = augment(x, make_generator(1), max_shift=0, contrast=0.0, brightness=0.1)
    off = (b - x).flatten(1)
    assert torch.allclose(off, off[:, :1].expand_as(off), atol=1e-6)
    assert off.abs().max() <= 0.1 + 1e-6 and off[:, 0].std() > 0.01
    # contrast only: scaled about the image mean by a factor in [0.8, 1.2], the mean kept
    c = augment(x, make_generator(1), max_shift=0, contrast=0.2, brightness=0.0)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    factor = ((c - mean).flatten(1) / (x - mean).flatten(1)).median(1).values
    assert factor.min() >= 0.8 - 1e-4 and factor.max() <= 1.2 + 1e-4 and factor.std() > 0.01
    torch.testing.assert_close(c, (x - mean) * factor.view(-1, 1, 1, 1) + mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(c.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), rtol=0, atol=1e-5)
    # no shift, no jitter: the identity
    assert torch.allclose(augment(x, make_generator(1), max_shift=0, contrast=0.0, brightness=0.0), x, atol=1e-6)


def test_augment_range_and_determinism():
    g = make_generator(0)
    x = torch.rand(16, 3, 12, 12, generator=g)
    x[:, :, :2] = 0.0
    x[:, :, -2:] = 1.0  # both ends of the range present
    a = augment(x, make_generator(1), max_shift=2, contrast=0.8, brightness=0.5)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, augment(x, make_generator(1), max_shift=2, contrast=0.8, brightness=0.5))
    assert not torch.equal(a, augment(x, make_generator(2), max_shift=2, contrast=0.8, brightness=0.5))


# -- the objective against a hand computation -----------------------------------------------
def _digits(n=48, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    xs = torch.rand(n, 3, size, size, generator=g) * 0.3
    for i in range(n):
        xs[i, :, (2 + 2 * int(y[i])) * size // 28, 2:size - 2] = 1.0
    return Domain("src", xs, y), Domain("tgt", (1 - xs) * 0.8, None)


WEIGHTS = dict(w_inter=0.5, w_target_mix=2.0, w_consistency=3.0, w_intra_source=0.7, w_intra_target=1.5,
               ramp_max=2.0, ramp_end=0.5)


def _hand_objective(net, xs, ys, xt, p, gen_state, c: IIMTConfig, swap=False):
    """IIMT's terms written out from the paper's definitions, replaying the generator's draws
    in their documented order (K augmentations, lam, lam_s, lam_t, perm_s, perm_t).
    ``swap``: lambda and 1 - lambda exchanged (a wrong implementation)."""
    g = torch.Generator().set_state(gen_state)
    b, n = xs.shape[0], 10
    augs = [augment(xt, g, c.max_shift, c.contrast, c.brightness) for _ in range(c.K)]
    lam, lam_s, lam_t = (mixup_coefficient(c.alpha, g, (b,)).double() for _ in range(3))
    perm_s, perm_t = torch.randperm(b, generator=g), torch.randperm(b, generator=g)
    assert lam.min() >= 0.5 and lam.max() < 1.0 and lam.std() > 0  # lam' = max(l, 1 - l)
    if swap:
        lam, lam_s, lam_t = 1 - lam, 1 - lam_s, 1 - lam_t
    img = lambda v: v.view(-1, 1, 1, 1)  # noqa: E731
    col = lambda v: v.view(-1, 1)  # noqa: E731
    with torch.no_grad():
        avg = torch.stack([torch.softmax(net(a), -1) for a in augs]).mean(0)
        sharp = avg ** (1 / c.T)
        q_t = sharp / sharp.sum(-1, keepdim=True)
    y1 = F.one_hot(ys, n).double()
    soft_ce = lambda logits, q: (-(q * torch.log_softmax(logits, -1)).sum(-1)).mean()  # noqa: E731
    sq_err = lambda logits, q: ((torch.softmax(logits, -1) - q) ** 2).sum(-1).mean()  # noqa: E731
    out = {}
    out["label_loss"] = soft_ce(net(xs), y1)
    ds = net.domain_classifier(net.features(torch.cat([xs, xt]))).squeeze(-1)
    d = torch.cat([torch.zeros(b), torch.ones(b)]).double()
    out["domain_loss"] = -(d * F.logsigmoid(ds) + (1 - d) * F.logsigmoid(-ds)).mean()
    x_st = img(lam) * xs + img(1 - lam) * xt
    out["inter_loss"] = soft_ce(net(x_st), col(lam) * y1 + col(1 - lam) * q_t)
    x_ts = img(lam) * xt + img(1 - lam) * xs
    out["target_mix_loss"] = sq_err(net(x_ts), col(lam) * q_t + col(1 - lam) * y1)
    fs, ft, fst = net.features(xs), net.features(xt), net.features(x_st)
    out["consistency_loss"] = ((col(lam) * fs + col(1 - lam) * ft - fst) ** 2).mean(1).mean()
    x_ss = img(lam_s) * xs + img(1 - lam_s) * xs[perm_s]
    out["intra_source_loss"] = soft_ce(net(x_ss), col(lam_s) * y1 + col(1 - lam_s) * y1[perm_s])
    x_tt = img(lam_t) * xt + img(1 - lam_t) * xt[perm_t]
    out["intra_target_loss"] = sq_err(net(x_tt), col(lam_t) * q_t + col(1 - lam_t) * q_t[perm_t])
    w = min(p / c.ramp_end, 1.0) * c.ramp_max
    out["total_loss"] = (out["label_loss"] + out["domain_loss"] + c.w_intra_source * out["intra_source_loss"]
                         + w * (c.w_inter * out["inter_loss"] + c.w_target_mix * out["target_mix_loss"]
                                + c.w_consistency * out["consistency_loss"]
                                + c.w_intra_target * out["intra_target_loss"]))
    out["pseudo_label_max"] = q_t.max(-1).values.mean()
    return out


def _iimt(seed=0, **cfg):
    src, tgt = _digits()
    m = IIMT(IIMTConfig(steps=10, batch_size=8, **cfg), src, tgt, [seed])
    m.nets[0].double()
    return m, src.x[:8].double(), src.y[:8], tgt.x[8:16].double()


def test_objective_terms_match_hand_computation():
    m, xs, ys, xt = _iimt(**WEIGHTS)
    net, gen = m.nets[0], m.generators[0]
    p = 0.2
    state = gen.get_state()
    total, parts = m.objective(net, xs, ys, xt, p, gen)
    hand = _hand_objective(net, xs, ys, xt, p, state, m.config)
    assert m.ramp(p) == pytest.approx(0.8) and linear_ramp(p, 0.5, 2.0) == pytest.approx(0.8)
    for k, v in hand.items():
        assert parts[k].item() == pytest.approx(v.item(), rel=1e-6, abs=1e-12), k
    assert total.item() == pytest.approx(hand["total_loss"].item(), rel=1e-6)
    # the scale is the calibrated one: a class-mean (mse_loss-like) squared error would be 10x smaller
    assert parts["target_mix_loss"].item() > 0 and parts["intra_target_loss"].item() > 0
    # lambda and 1 - lambda swapped would give other numbers for every mixed term
    swapped = _hand_objective(net, xs, ys, xt, p, state, m.config, swap=True)
    for k in ("inter_loss", "target_mix_loss", "consistency_loss", "intra_source_loss", "intra_target_loss"):
        assert parts[k].item() != pytest.approx(swapped[k].item(), rel=1e-3), k


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_total_is_weighted_sum_of_parts_with_ramp(p):
    m, xs, ys, xt = _iimt(**WEIGHTS)
    total, parts = m.objective(m.nets[0], xs, ys, xt, p, m.generators[0])
    w = linear_ramp(p, 0.5, 2.0)
    assert m.ramp(p) == w and m.schedule(p)["ramp"] == w
    expected = (parts["label_loss"] + parts["domain_loss"] + 0.7 * parts["intra_source_loss"]
                + w * (0.5 * parts["inter_loss"] + 2.0 * parts["target_mix_loss"] + 3.0 * parts["consistency_loss"]
                       + 1.5 * parts["intra_target_loss"]))
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    assert parts["total_loss"].item() == pytest.approx(total.item(), rel=1e-12)


@pytest.mark.parametrize("clip", [None, 1e-3, 1e6])
def test_step_is_sgd_on_the_clipped_objective(clip):
    """The step is SGD on the objective; with grad_clip, the first momentum-SGD step is
    ``w - lr * g * min(1, clip / ||g||)``, with ``||g||`` the L2 norm over every parameter's
    gradient (logged as ``grad_norm``); unclipped (None, or a clip above the norm), exactly
    ``w - lr * g``."""
    m, xs, ys, xt = _iimt(lr=0.05, momentum=0.9, grad_clip=clip)
    net = m.nets[0]
    w0 = {k: v.detach().clone() for k, v in net.named_parameters()}
    state = m.generators[0].get_state()
    total, _ = m.objective(net, xs, ys, xt, 0.3, torch.Generator().set_state(state))
    grads = dict(zip(w0, torch.autograd.grad(total, list(net.parameters()), allow_unused=True)))
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads.values() if g is not None)).item()
    parts = m.update(xs, ys, xt, 0.3)  # the loop applies the learning rate, then the step
    assert parts["grad_norm"].item() == pytest.approx(norm, rel=1e-9)
    scale = 1.0 if clip is None else min(1.0, clip / norm)
    assert (scale < 1.0) == (clip == 1e-3)
    lr = m.config.lr_at(0.3)
    assert lr == pytest.approx(0.05 / (1 + 10 * 0.3) ** 0.75)
    moved = torch.sqrt(sum(((prm.detach() - w0[k]) ** 2).sum() for k, prm in net.named_parameters())).item()
    assert moved == pytest.approx(lr * norm * scale, rel=1e-5)  # torch divides by ||g|| + 1e-6
    for k, prm in net.named_parameters():
        g = grads[k] if grads[k] is not None else torch.zeros_like(prm)
        torch.testing.assert_close(prm.detach(), w0[k] - lr * scale * g, rtol=1e-9 if scale == 1 else 1e-5,
                                   atol=1e-12, msg=k)


def _hand_gradients(net, xs, ys, xt, p, gen_state, c: IIMTConfig, detach_pseudo_labels=True):
    """The parameter gradients of IIMT's total loss, written out from the paper's definitions
    apart from the method's code: the draws replayed in their documented order, the domain
    loss behind a hand-made gradient reversal (value ``f``, gradient ``-lambda``, eq. 6's
    lambda) and the pseudo-labels ``q_t`` computed under ``no_grad`` (targets, not functions of
    the weights) or, with ``detach_pseudo_labels=False``, with their graph kept (a wrong step).
    ``{name: gradient}`` for every parameter (zeros where the loss does not reach it)."""
    g = torch.Generator().set_state(gen_state)
    b, n = xs.shape[0], 10
    augs = [augment(xt, g, c.max_shift, c.contrast, c.brightness) for _ in range(c.K)]
    lam, lam_s, lam_t = (mixup_coefficient(c.alpha, g, (b,)).double() for _ in range(3))
    perm_s, perm_t = torch.randperm(b, generator=g), torch.randperm(b, generator=g)
    img, col = (lambda v: v.view(-1, 1, 1, 1)), (lambda v: v.view(-1, 1))
    with torch.set_grad_enabled(not detach_pseudo_labels):
        sharp = torch.stack([torch.softmax(net(a), -1) for a in augs]).mean(0) ** (1 / c.T)
        q_t = sharp / sharp.sum(-1, keepdim=True)
    assert q_t.requires_grad == (not detach_pseudo_labels)
    y1 = F.one_hot(ys, n).double()
    soft_ce = lambda logits, q: (-(q * torch.log_softmax(logits, -1)).sum(-1)).mean()  # noqa: E731
    sq_err = lambda logits, q: ((torch.softmax(logits, -1) - q) ** 2).sum(-1).mean()  # noqa: E731
    grl = 2 / (1 + math.exp(-c.gamma * p)) - 1
    f = net.features(torch.cat([xs, xt]))
    f_rev = f.detach() - grl * (f - f.detach())
    ds = net.domain_classifier(f_rev).squeeze(-1)
    d = torch.cat([torch.zeros(b), torch.ones(b)]).double()
    domain = -(d * F.logsigmoid(ds) + (1 - d) * F.logsigmoid(-ds)).mean()
    x_st, x_ts = img(lam) * xs + img(1 - lam) * xt, img(lam) * xt + img(1 - lam) * xs
    inter = soft_ce(net(x_st), col(lam) * y1 + col(1 - lam) * q_t)
    target_mix = sq_err(net(x_ts), col(lam) * q_t + col(1 - lam) * y1)
    consistency = ((col(lam) * net.features(xs) + col(1 - lam) * net.features(xt) - net.features(x_st)) ** 2
                   ).mean(1).mean()
    x_ss, x_tt = img(lam_s) * xs + img(1 - lam_s) * xs[perm_s], img(lam_t) * xt + img(1 - lam_t) * xt[perm_t]
    intra_source = soft_ce(net(x_ss), col(lam_s) * y1 + col(1 - lam_s) * y1[perm_s])
    intra_target = sq_err(net(x_tt), col(lam_t) * q_t + col(1 - lam_t) * q_t[perm_t])
    w = min(p / c.ramp_end, 1.0) * c.ramp_max
    total = (soft_ce(net(xs), y1) + domain + c.w_intra_source * intra_source
             + w * (c.w_inter * inter + c.w_target_mix * target_mix + c.w_consistency * consistency
                    + c.w_intra_target * intra_target))
    names, params = zip(*net.named_parameters())
    grads = torch.autograd.grad(total, params, allow_unused=True)
    return {k: torch.zeros_like(prm) if gr is None else gr for k, prm, gr in zip(names, params, grads)}


def test_step_gradient_treats_the_pseudo_labels_as_constants():
    """IIMT's pseudo-labels are targets: no gradient flows through ``q_t`` (they are computed
    under ``no_grad``). The gradient the step applies equals the hand-written loss's gradient
    with ``q_t`` detached, and differs from the one with ``q_t``'s graph kept (the test has
    power: the three terms that use ``q_t`` would pull on the weights through it too)."""
    m, xs, ys, xt = _iimt(grad_clip=None, **WEIGHTS)
    net, p = m.nets[0], 0.3
    state = m.generators[0].get_state()
    detached = _hand_gradients(net, xs, ys, xt, p, state, m.config)
    kept = _hand_gradients(net, xs, ys, xt, p, state, m.config, detach_pseudo_labels=False)
    diff = torch.sqrt(sum(((detached[k] - kept[k]) ** 2).sum() for k in detached))
    norm = torch.sqrt(sum((v ** 2).sum() for v in detached.values()))
    assert diff > 0.01 * norm, "detaching q_t makes no difference here: the test would prove nothing"
    m.step_one(0, xs, ys, xt, p)  # the step leaves its gradient in .grad (SGD does not touch it)
    for k, prm in net.named_parameters():
        torch.testing.assert_close(prm.grad, detached[k], rtol=1e-7, atol=1e-12, msg=lambda e, k=k: f"{k}: {e}")


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True, "10"])
def test_grad_clip_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="grad_clip must be a finite number > 0"):
        IIMTConfig(grad_clip=bad).validate()


# -- switches ------------------------------------------------------------------------------
def _grads(config, p=0.8, seed=0):
    src, tgt = _digits()
    m = IIMT(config, src, tgt, [seed])
    net = m.nets[0]
    total, parts = m.objective(net, src.x[:16], src.y[:16], tgt.x[:16], p, m.generators[0])
    net.zero_grad()
    total.backward()
    return {k: v.grad.clone() for k, v in net.named_parameters() if v.grad is not None}, parts


@pytest.mark.parametrize("switch,weight,part", [
    ("inter_mixup", "w_inter", "inter_loss"), ("target_dominated_mixup", "w_target_mix", "target_mix_loss"),
    ("consistency", "w_consistency", "consistency_loss"), ("intra_source", "w_intra_source", "intra_source_loss"),
    ("intra_target", "w_intra_target", "intra_target_loss"),
])
def test_switched_off_component_contributes_zero_gradient(switch, weight, part):
    base = IIMTConfig(steps=10, batch_size=16)
    off, parts_off = _grads(IIMTConfig(**{**base.__dict__, switch: False}))
    zero_w, _ = _grads(IIMTConfig(**{**base.__dict__, weight: 0.0}))
    on, parts_on = _grads(base)
    assert part in parts_on and part not in parts_off
    assert set(parts_on) - set(parts_off) == {part}
    for k in on:
        assert torch.allclose(off[k], zero_w[k], atol=1e-6, rtol=1e-5), k
    assert any(not torch.allclose(off[k], on[k], atol=1e-6, rtol=1e-5) for k in on), \
        f"{switch} on and off give the same gradient: the component does nothing"
    # an ablation sees the same draws: the other terms keep their values
    for k in parts_off:
        if k != "total_loss":
            assert parts_off[k].item() == pytest.approx(parts_on[k].item(), rel=1e-6), k


def test_adversarial_switch_removes_domain_gradient():
    base = IIMTConfig(steps=10, batch_size=16)
    off, parts = _grads(IIMTConfig(**{**base.__dict__, "adversarial": False}))
    on, parts_on = _grads(base)
    assert "domain_loss" in parts_on and "domain_loss" not in parts
    assert all(not k.startswith("domain_classifier") for k in off)  # no gradient reaches G_d
    assert any(k.startswith("domain_classifier") for k in on)
    assert parts["label_loss"].item() == pytest.approx(parts_on["label_loss"].item(), rel=1e-6)


def test_ramp_starts_at_zero():
    base = IIMTConfig(steps=10, batch_size=16, intra_source=False, adversarial=False)
    at0, _ = _grads(base, p=0.0)
    only_label, _ = _grads(IIMTConfig(**{**base.__dict__, **{c: False for c in COMPONENTS}}), p=0.0)
    for k in at0:  # at p = 0 every target-involving weight is 0: only the source label loss acts
        assert torch.allclose(at0[k], only_label[k], atol=1e-6, rtol=1e-5), k


# -- through train() -----------------------------------------------------------------------
def test_registry_and_training_through_train():
    src, tgt = _digits()
    t_eval = Domain("t", tgt.x, src.y)
    assert set(ABLATIONS) <= set(methods.METHODS)
    assert all(methods.METHODS[name] == (IIMT, fixed) for name, fixed in ABLATIONS.items())
    assert methods.make_config("iimt_no_intra").intra_source is False
    kw = dict(seeds=[0], eval_sets={"t": t_eval}, progress=False, steps=4, batch_size=8, eval_every=1)
    (full,) = methods.train("iimt", src, Domain("tgt", tgt.x, src.y), **kw)
    (abl,) = methods.train("iimt_no_consistency", src, Domain("tgt", tgt.x, src.y), **kw)
    assert abl.method == "iimt_no_consistency" and abl.config["consistency"] is False and abl.status == "ok"
    assert full.config["consistency"] is True and abl.seed == full.seed == 0
    assert all("consistency_loss" not in h and "inter_loss" in h for h in abl.history)
    assert all("consistency_loss" in h for h in full.history)
    # the ablation's first step saw the same batch, augmentations and coefficients
    for k in ("label_loss", "domain_loss", "inter_loss", "pseudo_label_max"):
        assert abl.history[0][k] == pytest.approx(full.history[0][k], rel=1e-6), k
    # the logged ramp is the schedule at each step's progress
    assert [h["ramp"] for h in full.history] == [linear_ramp(s / 4, 0.5, 1.0) for s in range(4)]
    # the reported accuracy is that of the trained network handed back
    net = abl.modules["net"]
    assert abl.final["t_acc"] == pytest.approx(accuracy(net, t_eval.x, t_eval.y).item())
    for field, value in (("K", 0), ("T", 1.5), ("alpha", -1.0), ("ramp_end", 0.0), ("optimizer", "rmsprop"),
                         ("consistency", "yes"), ("network", "toy")):
        with pytest.raises(ValueError, match=field):
            IIMTConfig(**{field: value}).validate()


# -- divergence ----------------------------------------------------------------------------
class _NaNAfter(Method):
    """A method whose loss turns NaN after ``n`` steps."""

    name = "nan_after"

    def __init__(self, seeds, n, bad=float("nan"), after=None):
        self.seeds, self.n, self.t, self.bad, self.after = seeds, n, 0, bad, after
        self.w = nn.Linear(4, 2)

    def step(self, xs, ys, xt, p):
        self.t += 1
        if self.after is not None and self.t > self.n + 2:  # settles again (a dead network's chance loss)
            return {"loss": torch.tensor(self.after)}
        return {"loss": torch.tensor(self.bad if self.t > self.n else 1.0)}

    def predict(self, x):
        return self.w(x)

    def modules(self, i):
        return {"w": self.w}


def test_nan_loss_recorded_as_diverged_and_left_out_of_table():
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()
    d = Domain("d", x, y)
    (bad,) = fit(_NaNAfter([0], 3), d, d, steps=20, batch_size=8, eval_sets={"t": d}, eval_every=2,
                 progress=False)
    (good,) = fit(_NaNAfter([1], 10_000), d, d, steps=20, batch_size=8, eval_sets={"t": d}, eval_every=2,
                  progress=False)
    assert bad.status == "diverged" and "non-finite" in bad.final["message"]
    assert bad.history[-1]["step"] == 4 and bad.history[-1]["status"] == "diverged"  # the run stopped there
    assert bad.final["steps"] == bad.steps == 4  # the steps it trained, not the 20 asked for
    assert good.status == "ok" and good.history[-1]["step"] == 20 and good.final["steps"] == good.steps == 20
    records = [dict(r.final, method="m") for r in (bad, good)]
    records[0]["t_acc"] = 123.0  # a diverged seed's number must not reach the mean
    table = summary_table(records, "t_acc")
    assert table.loc["m", "failed"] == 1
    assert table.loc["m", "t_acc"].startswith(f"{good.final['t_acc']:.4f}") and "(1 seed" in table.loc["m", "t_acc"]


def test_an_exploded_loss_is_diverged_even_when_it_settles_again(tmp_path):
    """A seed whose loss blew up (6.5e8 in one MNIST-M IIMT run) and then sat at a dead
    network's 2.30 is diverged, not "ok": in training, and when read from the store (runs
    stored before the check existed are judged from their history)."""
    import json

    from dannlib.store import RunSpec, Store, toy_data
    from dannlib.training import EXPLODED_LOSS, judge_history

    x = torch.randn(32, 4)
    d = Domain("d", x, (x[:, 0] > 0).long())
    (bad,) = fit(_NaNAfter([0], 3, bad=6.5e8, after=2.3), d, d, steps=20, batch_size=8, eval_sets={"t": d},
                 eval_every=2, progress=False)
    assert bad.status == "diverged" and "exploded loss at step 4" in bad.final["message"]
    (edge,) = fit(_NaNAfter([0], 3, bad=EXPLODED_LOSS / 2), d, d, steps=8, batch_size=8, eval_every=2,
                  progress=False)
    assert edge.status == "ok"  # large but below the threshold: not judged
    # a stored run recorded "ok" by older code, whose history shows the explosion
    store = Store(tmp_path)
    spec = RunSpec.make("dann", toy_data("blobs", n=300, seed=0), 0, network="toy", steps=4, batch_size=8)
    history = [{"step": 2, "label_loss": 1.0, "t_acc": 0.6}, {"step": 4, "label_loss": 6.5e8, "t_acc": 0.1},
               {"step": 6, "label_loss": 2.302, "t_acc": 0.1}]
    assert judge_history(history) == "label_loss=6.5e+08 at step 4"
    path = store.path(spec)
    path.parent.mkdir(parents=True)
    from dannlib.store import code_version

    path.write_text(json.dumps({"spec": spec.payload(), "final": {"status": "ok", "t_acc": 0.1}, "history": history,
                                "seconds": 1.0, "code": code_version(), "machine": {}}))
    run = store.get(spec)
    assert run is not None and run.status == "diverged"
    rec = run.record()
    assert rec["status"] == "diverged" and "label_loss=6.5e+08 at step 4" in rec["message"]


def test_target_weights_zero_trains_exactly_like_the_target_terms_switched_off():
    """Notebook 08's bug check of ``iimt_no_adversarial``: with every target term weighted 0 the
    step must be source-only plus intra-source mixup, parameter for parameter."""
    zero = dict(w_inter=0.0, w_target_mix=0.0, w_consistency=0.0, w_intra_target=0.0)
    off = dict(inter_mixup=False, target_dominated_mixup=False, consistency=False, intra_target=False)
    a, xs, ys, xt = _iimt(adversarial=False, **zero)
    b, *_ = _iimt(adversarial=False, **off)
    c, *_ = _iimt(adversarial=False)   # with the target terms on, the parameters move elsewhere
    for p in (0.3, 0.6, 0.9):
        for m in (a, b, c):
            m.step_one(0, xs, ys, xt, p)
    pa, pb, pc = (torch.cat([t.detach().flatten() for t in m.nets[0].parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.allclose(pa, pc)
