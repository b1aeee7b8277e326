"""ADDA (dannlib.methods.adda): untied target encoder, frozen source side, mapping losses,
stage-2 steps (ADDA and the tied DANN stage 2) against hand computations, collapse
detection, the two-stage run through ``train``, config errors."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from dannlib import methods
from dannlib.methods.adda import (ADDA, ADDAConfig, SourcePretrain, adda_mapping_loss, detect_collapse,
                                  discriminator_loss, prediction_entropy)
from dannlib.schedules import grl_lambda
from dannlib.training import Domain, accuracy, fit


def _domains(n=64, shift=0.3, seed=0, size=28):
    """A learnable synthetic pair: each class has a bright bar on its own row; the target is
    the source brightened by ``shift`` (the same digits, another "style")."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, size, size, generator=g) * 0.2
    for i in range(n):
        row = (2 + 2 * int(y[i])) * size // 28
        x[i, 0, row, size // 7:size - size // 7] = 1.0
    xt = (x + shift).clamp(0, 1)
    return Domain("src", x, y), Domain("tgt", xt, y)


def _pretrained(steps=3, seed=0, size=28):
    src, tgt = _domains(size=size)
    cfg = ADDAConfig(pretrain_steps=steps, steps=3, batch_size=16)
    pre = SourcePretrain(cfg, src, None, [seed])
    fit(pre, src, None, steps=steps, batch_size=16, progress=False)  # stage 1 samples no target
    return cfg, pre, src, tgt


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(module, state):
    return all(torch.equal(v, state[k]) for k, v in module.state_dict().items())


def test_target_encoder_starts_equal_but_untied():
    cfg, pre, _, _ = _pretrained()
    m = ADDA(cfg, pre)
    ps = dict(m.source_encoders[0].named_parameters())
    pt = dict(m.target_encoders[0].named_parameters())
    assert ps.keys() == pt.keys() and len(ps) > 0
    for k in ps:
        assert torch.equal(ps[k], pt[k]), k
        assert ps[k].data_ptr() != pt[k].data_ptr(), f"{k} is shared (tied), ADDA needs untied weights"
        assert not ps[k].requires_grad and pt[k].requires_grad
    assert not m.source_encoders[0].training and not m.classifiers[0].training


def test_adaptation_changes_only_target_encoder():
    cfg, pre, src, tgt = _pretrained()
    m = ADDA(cfg, pre)
    before_s, before_c = _state(m.source_encoders[0]), _state(m.classifiers[0])
    before_t = _state(m.target_encoders[0])
    (r,) = fit(m, src, tgt.unlabelled(), steps=5, batch_size=16, progress=False)
    assert _same(m.source_encoders[0], before_s), "the source encoder M_s changed"
    assert _same(m.classifiers[0], before_c), "the classifier C changed"
    assert not _same(m.target_encoders[0], before_t), "the target encoder M_t did not change"
    # the pre-trained networks themselves are untouched too (ADDA works on copies)
    assert _same(pre.encoders[0], before_s) and _same(pre.classifiers[0], before_c)
    assert {"d_loss", "d_acc", "mapping_loss", "target_pred_entropy"} <= set(r.history[-1])
    assert r.modules["encoder"] is m.target_encoders[0] and r.modules["classifier"] is m.classifiers[0]


# -- stage 2 against a hand computation ---------------------------------------------------
class _HandAdam:
    """Adam written out (Kingma & Ba, alg. 1): m, v moments, bias-corrected, eps outside the root."""

    def __init__(self, lr, betas, eps=1e-8):
        self.lr, self.betas, self.eps, self.t, self.m, self.v = lr, betas, eps, 0, {}, {}

    @torch.no_grad()
    def step(self, params: dict, grads: dict):
        b1, b2 = self.betas
        self.t += 1
        for k, p in params.items():
            g = grads[k] if grads[k] is not None else torch.zeros_like(p)
            self.m[k] = b1 * self.m.get(k, torch.zeros_like(p)) + (1 - b1) * g
            self.v[k] = b2 * self.v.get(k, torch.zeros_like(p)) + (1 - b2) * g * g
            m_hat, v_hat = self.m[k] / (1 - b1 ** self.t), self.v[k] / (1 - b2 ** self.t)
            p -= self.lr * m_hat / (v_hat.sqrt() + self.eps)


def _grads(loss, params: dict, retain=False):
    gs = torch.autograd.grad(loss, list(params.values()), allow_unused=True, retain_graph=retain)
    return dict(zip(params, gs))


def _hand_mapping_loss(z, kind):
    # D = sigmoid(z) = P(source); log D = logsigmoid(z), log(1 - D) = logsigmoid(-z)
    if kind == "gan":
        return -F.logsigmoid(z).mean()
    if kind == "minimax":
        return F.logsigmoid(-z).mean()
    return -(0.5 * F.logsigmoid(z) + 0.5 * F.logsigmoid(-z)).mean()


def _hand_l_adv_d(z_s, z_t):
    """Tzeng et al. eq. 7: -E_s log D(M_s x_s) - E_t log(1 - D(M_t x_t))."""
    return -F.logsigmoid(z_s).mean() - F.logsigmoid(-z_t).mean()


def _double(m: ADDA):
    # in place: the optimisers keep the same Parameter objects
    for mods in (m.source_encoders, m.classifiers, m.target_encoders, m.discriminators):
        for mod in mods:
            mod.double()


def _batches(src, tgt, n=2, b=8):
    return [(src.x[i * b:(i + 1) * b].double(), src.y[i * b:(i + 1) * b], tgt.x[i * b + 3:(i + 1) * b + 3].double())
            for i in range(n)]


def _params(module):
    return dict(module.named_parameters())


def _assert_params_close(module, expected: dict, what: str):
    for k, p in module.named_parameters():
        torch.testing.assert_close(p.detach(), expected[k].detach(), rtol=1e-7, atol=1e-10, msg=f"{what} {k}")


@pytest.mark.parametrize("kind", ["gan", "minimax", "confusion"])
def test_adda_stage2_steps_match_hand_computation(kind):
    """Two ADDA steps (two, so that the config's betas matter to Adam) recomputed by hand:
    the discriminator descends L_advD with Adam(lr, betas), then M_t descends the mapping
    loss through the *updated* discriminator; M_s and C do not move."""
    cfg, pre, src, tgt = _pretrained(steps=2, size=16)
    cfg = ADDAConfig(pretrain_steps=2, steps=2, batch_size=8, lr=1e-3, beta1=0.5, beta2=0.9, mapping_loss=kind)
    m = ADDA(cfg, pre)
    _double(m)
    m_s, c, m_t, d = (copy.deepcopy(x[0]) for x in (m.source_encoders, m.classifiers, m.target_encoders,
                                                    m.discriminators))
    s0, c0 = _state(m_s), _state(c)
    opt_d, opt_t = _HandAdam(1e-3, (0.5, 0.9)), _HandAdam(1e-3, (0.5, 0.9))
    for p, (xs, ys, xt) in zip((0.0, 0.5), _batches(src, tgt)):
        out = m.step(xs, ys, xt, p)
        # by hand
        f_s = m_s(xs).detach()
        f_t = m_t(xt)
        l_d = _hand_l_adv_d(d(f_s)[:, 0], d(f_t.detach())[:, 0])
        opt_d.step(_params(d), _grads(l_d, _params(d)))
        l_map = _hand_mapping_loss(d(f_t)[:, 0], kind)
        opt_t.step(_params(m_t), _grads(l_map, _params(m_t)))
        assert out["d_loss"].item() == pytest.approx(l_d.item(), rel=1e-9)
        assert out["mapping_loss"].item() == pytest.approx(l_map.item(), rel=1e-9)
    _assert_params_close(m.discriminators[0], _params(d), "discriminator")
    _assert_params_close(m.target_encoders[0], _params(m_t), "target encoder")
    assert _same(m.source_encoders[0], s0) and _same(m.classifiers[0], c0)
    assert not _same(m.target_encoders[0], s0)


def test_dann_stage2_steps_match_hand_computation():
    """stage2="dann" (method dann_lenet): one tied encoder for both domains; the encoder and
    classifier descend CE(source) - lambda * L_advD (gradient reversal, lambda from eq. 6 of
    stage 2's progress), the discriminator descends L_advD; Adam with the config's lr/betas."""
    cfg, pre, src, tgt = _pretrained(steps=2, size=16)
    cfg = ADDAConfig(pretrain_steps=2, steps=2, batch_size=8, lr=1e-3, beta1=0.5, beta2=0.9, stage2="dann",
                     gamma=10.0)
    m = ADDA(cfg, pre)
    assert m.name == "dann_lenet"
    assert m.source_encoders[0] is m.target_encoders[0]  # tied
    _double(m)
    enc, c, d = (copy.deepcopy(x[0]) for x in (m.target_encoders, m.classifiers, m.discriminators))
    c0 = _state(c)
    opt_d, opt_t = _HandAdam(1e-3, (0.5, 0.9)), _HandAdam(1e-3, (0.5, 0.9))
    for p, (xs, ys, xt) in zip((0.1, 0.6), _batches(src, tgt)):
        out = m.step(xs, ys, xt, p)
        lam = 2 / (1 + math.exp(-10.0 * p)) - 1
        assert lam == pytest.approx(grl_lambda(p, 10.0)) and m.schedule(p)["grl_lambda"] == pytest.approx(lam)
        f_s, f_t = enc(xs), enc(xt)
        label = -torch.log_softmax(c(f_s), -1)[torch.arange(len(ys)), ys].mean()
        l_d = _hand_l_adv_d(d(f_s)[:, 0], d(f_t)[:, 0])
        g_label_enc = _grads(label, _params(enc), retain=True)
        g_label_c = _grads(label, _params(c), retain=True)
        g_d_enc = _grads(l_d, _params(enc), retain=True)
        g_d_d = _grads(l_d, _params(d))
        opt_d.step(_params(d), g_d_d)
        opt_t.step({**{f"e.{k}": v for k, v in _params(enc).items()}, **{f"c.{k}": v for k, v in _params(c).items()}},
                   {**{f"e.{k}": g_label_enc[k] - lam * g_d_enc[k] for k in g_label_enc},
                    **{f"c.{k}": g for k, g in g_label_c.items()}})
        assert out["label_loss"].item() == pytest.approx(label.item(), rel=1e-9)
        assert out["d_loss"].item() == pytest.approx(l_d.item(), rel=1e-9)
    _assert_params_close(m.discriminators[0], _params(d), "discriminator")
    _assert_params_close(m.target_encoders[0], _params(enc), "encoder")
    _assert_params_close(m.classifiers[0], _params(c), "classifier")
    assert not _same(m.classifiers[0], c0)  # unlike ADDA, the classifier keeps learning


# -- losses and diagnostics ---------------------------------------------------------------
def _logit(p):
    return math.log(p / (1 - p))


def test_mapping_losses_match_hand_computed_values():
    # D(M_t x_t) = 0.8 and 0.25 for two target images
    z = torch.tensor([_logit(0.8), _logit(0.25)], dtype=torch.float64)
    gan = -(math.log(0.8) + math.log(0.25)) / 2                       # 0.80471896
    minimax = (math.log(0.2) + math.log(0.75)) / 2                   # -0.94855999
    confusion = -(0.5 * math.log(0.8) + 0.5 * math.log(0.2) + 0.5 * math.log(0.25) + 0.5 * math.log(0.75)) / 2
    assert adda_mapping_loss(z, "gan").item() == pytest.approx(0.804718956, abs=1e-8)
    assert adda_mapping_loss(z, "gan").item() == pytest.approx(gan, abs=1e-12)
    assert adda_mapping_loss(z, "minimax").item() == pytest.approx(-0.948559991, abs=1e-8)
    assert adda_mapping_loss(z, "minimax").item() == pytest.approx(minimax, abs=1e-12)
    assert adda_mapping_loss(z, "confusion").item() == pytest.approx(confusion, abs=1e-12)
    # the confusion loss is smallest when D outputs 1/2, where it equals log 2
    assert adda_mapping_loss(torch.zeros(3), "confusion").item() == pytest.approx(math.log(2), abs=1e-6)
    # minimax = -L_advD restricted to the target term
    zs = torch.tensor([_logit(0.9)], dtype=torch.float64)
    l_adv, _ = discriminator_loss(zs, z)
    assert (-l_adv).item() == pytest.approx(math.log(0.9) + minimax, abs=1e-12)


def test_discriminator_accuracy_and_entropy():
    _, acc = discriminator_loss(torch.tensor([2.0, -1.0]), torch.tensor([-3.0, -0.5]))
    assert acc.item() == pytest.approx(0.75)
    one_class = torch.zeros(50, 10)
    one_class[:, 3] = 1
    assert prediction_entropy(one_class, 10).item() == pytest.approx(0.0)
    uniform = torch.eye(10).repeat(5, 1)
    assert prediction_entropy(uniform, 10).item() == pytest.approx(1.0, abs=1e-6)
    two = torch.eye(10)[torch.tensor([0, 1] * 25)]  # half the inputs in class 0, half in 1
    assert prediction_entropy(two, 10).item() == pytest.approx(math.log(2) / math.log(10), abs=1e-6)


def test_collapse_detected_from_unlabelled_signals():
    cfg = ADDAConfig()  # window: the final 25 % of the records
    healthy = [{"seed": 0, "step": s, "d_acc": 0.6, "target_pred_entropy": 0.95} for s in range(1, 21)]
    assert detect_collapse(healthy, cfg) == ""
    assert detect_collapse([], cfg) == ""
    d_wins = [dict(r, d_acc=1.0 if r["step"] > 10 else 0.6) for r in healthy]
    assert "discriminator accuracy >=" in detect_collapse(d_wins, cfg)
    d_loses = [dict(r, d_acc=0.0 if r["step"] > 10 else 0.6) for r in healthy]
    assert "discriminator accuracy <=" in detect_collapse(d_loses, cfg)
    one_class = [dict(r, target_pred_entropy=0.05 if r["step"] > 12 else 0.9) for r in healthy]
    msg = detect_collapse(one_class, cfg)
    assert "collapsed onto few classes" in msg and "steps 16-20" in msg
    # what happened before the window does not count
    recovered = [dict(r, d_acc=1.0 if r["step"] <= 15 else 0.6, target_pred_entropy=0.05 if r["step"] <= 15 else 0.9)
                 for r in healthy]
    assert detect_collapse(recovered, cfg) == ""
    # D winning only now and then is not a collapse
    flicker = [dict(r, d_acc=1.0 if r["step"] % 2 else 0.9) for r in healthy]
    assert detect_collapse(flicker, cfg) == ""


# -- the two stages through train() -------------------------------------------------------
TWO_STAGE = dict(pretrain_steps=20, steps=6, batch_size=16, eval_every=3)


@pytest.fixture(scope="module")
def two_stage():
    src, tgt = _domains(100)
    s_test, t_test = _domains(100, seed=1)
    evals = {"source_test": s_test, "target_test": t_test}
    res = methods.train("adda_gan", src, tgt, seeds=[0, 1], eval_sets=evals, progress=False, **TWO_STAGE)
    return src, tgt, evals, res


def test_two_stage_run_facts(two_stage):
    src, tgt, evals, res = two_stage
    assert [r.seed for r in res] == [0, 1]
    for r in res:
        pre = r.parts["pretrain"]
        assert r.method == "adda_gan" and r.config["mapping_loss"] == "gan" and r.config["stage2"] == "adda"
        assert pre.method == "adda_pretrain" and pre.seed == r.seed
        assert pre.steps == 20 and r.steps == 6 and [h["step"] for h in r.history] == [3, 6]
        assert {h["seed"] for h in r.history} == {r.seed}
        # stage 1 learns the learnable source (held-out images; measured 1.0)
        assert pre.final["source_test_acc"] >= 0.9
        # stage 2 moved M_t away from M_s; C and M_s (the stage-1 networks) did not move
        m_s, c_pre = pre.modules["encoder"], pre.modules["classifier"]
        m_t, c = r.modules["encoder"], r.modules["classifier"]
        assert m_t is not m_s
        assert any(not torch.equal(a, b) for a, b in zip(m_t.parameters(), m_s.parameters()))
        assert all(torch.equal(a, b) for a, b in zip(c.parameters(), c_pre.parameters()))
        # the reported target accuracy is that of C(M_t(x)), the stage-1 one that of C(M_s(x))
        t = evals["target_test"]
        with torch.no_grad():
            assert r.final["target_test_acc"] == pytest.approx(accuracy(lambda x: c(m_t(x)), t.x, t.y).item())
            assert pre.final["target_test_acc"] == pytest.approx(accuracy(lambda x: c(m_s(x)), t.x, t.y).item())
        # the status is detect_collapse's verdict on this seed's own history
        verdict = detect_collapse(r.history, ADDAConfig(**r.config))
        assert r.status == ("collapsed" if verdict else "ok")
    # the seeds are different runs
    e0, e1 = (r.parts["pretrain"].modules["encoder"] for r in res)
    assert not torch.equal(next(e0.parameters()), next(e1.parameters()))


def test_shared_pretraining_and_single_seed_equal_the_two_stage_run(two_stage):
    src, tgt, evals, res = two_stage
    pre = [r.parts["pretrain"] for r in res]
    before = [_state(p.modules["encoder"]) for p in pre]
    shared = methods.train("adda_gan", src, tgt, seeds=[1], eval_sets=evals, progress=False, pretrained=pre,
                           **TWO_STAGE)
    assert len(shared) == 1 and shared[0].parts["pretrain"] is pre[1]
    assert all(_same(p.modules["encoder"], b) for p, b in zip(pre, before))  # stage 2 worked on copies
    alone = methods.train("adda_gan", src, tgt, seeds=[1], eval_sets=evals, progress=False, **TWO_STAGE)
    for other in (shared[0], alone[0]):
        assert other.final["target_test_acc"] == res[1].final["target_test_acc"]
        assert other.history == res[1].history
        for a, b in zip(other.modules["encoder"].parameters(), res[1].modules["encoder"].parameters()):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="lacks seed"):
        methods.train("adda_gan", src, tgt, seeds=[2], progress=False, pretrained=pre, **TWO_STAGE)
    with pytest.raises(ValueError, match="ADDA family"):
        methods.train("dann", src, tgt, seeds=[0], progress=False, pretrained=pre, steps=2)


def test_collapse_marks_the_seed_and_keeps_its_numbers(two_stage):
    src, tgt, evals, _ = two_stage
    # a batch of 16 images over 10 classes has a predicted-class entropy of at most 0.978 of
    # log 10: with collapse_entropy 0.99 every run reads as collapsed
    (r,) = methods.train("adda_gan", src, tgt, seeds=[0], eval_sets=evals, progress=False,
                         **{**TWO_STAGE, "pretrain_steps": 2, "steps": 2, "eval_every": 1}, collapse_entropy=0.99)
    assert r.status == "collapsed" and "collapsed onto few classes" in r.final["message"]
    assert "target_test_acc" in r.final and r.parts["pretrain"].status == "ok"


@pytest.mark.parametrize("field,value", [
    ("mapping_loss", "wasserstein"), ("encoder", "resnet"), ("steps", 0), ("pretrain_steps", -1),
    ("batch_size", 1.5), ("lr", 0.0), ("beta1", 1.0), ("collapse_window", 0.0), ("stage2", "cogan"),
])
def test_config_errors_name_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        ADDAConfig(**{field: value}).validate()


def test_mapping_loss_kind_error():
    with pytest.raises(ValueError, match="kind"):
        adda_mapping_loss(torch.zeros(2), "wgan")


def test_registry_entries():
    for name, kind in (("adda_gan", "gan"), ("adda_minimax", "minimax"), ("adda_confusion", "confusion")):
        cls, fixed = methods.METHODS[name]
        assert cls is ADDA and fixed == {"mapping_loss": kind}
        assert methods.make_config(name).mapping_loss == kind and methods.make_config(name).stage2 == "adda"
    assert methods.METHODS["dann_lenet"] == (ADDA, {"stage2": "dann"})
    assert methods.METHODS["adda_pretrain"][0] is SourcePretrain


@pytest.mark.parametrize("method", ["adda_gan", "dann_lenet"])
def test_channels_last_lenet_trains_the_same_weights(method):
    """The LeNet's channels_last convolution weights (the CPU default, for speed) change the
    memory layout only: both stages end with the same weights and predictions as contiguous
    weights, up to float summation order; and the layout is really in use."""
    src, tgt = _domains(64)
    out = {}
    for flag in (False, True):
        (r,) = methods.train(method, src, tgt, seeds=[0], progress=False, channels_last=flag, **TWO_STAGE)
        out[flag] = r
    conv = [m for m in out[True].modules["encoder"].modules() if isinstance(m, torch.nn.Conv2d)][1]  # 20 -> 50
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    for part in ("encoder", "classifier"):
        for (k, a), b in zip(out[False].modules[part].state_dict().items(),
                             out[True].modules[part].state_dict().values()):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (part, k, (a - b).abs().max())
    pre = {f: out[f].parts["pretrain"].modules["encoder"] for f in out}
    for a, b in zip(pre[False].parameters(), pre[True].parameters()):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)  # measured max 1.3e-5 (Adam magnifies round-off)
    assert out[True].config["channels_last"] is True and out[False].config["channels_last"] is False
