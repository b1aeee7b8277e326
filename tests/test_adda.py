"""ADDA (dannlib.adda): untied target encoder, frozen source side, mapping losses, config."""
from __future__ import annotations

import math

import pytest
import torch

from dannlib import methods
from dannlib.adda import (ADDA, ADDAConfig, SourcePretrain, adda_mapping_loss, detect_collapse,
                          discriminator_loss, prediction_entropy, train_adda)
from dannlib.training import Domain, fit

torch.set_num_threads(1)


def _domains(n=64, shift=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.2
    for i in range(n):  # a class-dependent bright bar, so the source task is learnable
        x[i, 0, 2 + 2 * int(y[i]), 4:24] = 1.0
    xt = (x + shift).clamp(0, 1)
    return Domain("src", x, y), Domain("tgt", xt, y)


def _pretrained(steps=3, seed=0):
    src, tgt = _domains()
    cfg = ADDAConfig(pretrain_steps=steps, steps=3, batch_size=16)
    pre = SourcePretrain(cfg, src, None, [seed])
    fit(pre, src, src, steps=steps, batch_size=16, progress=False)
    return cfg, pre, src, tgt


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
    before_s = {k: v.clone() for k, v in m.source_encoders[0].state_dict().items()}
    before_c = {k: v.clone() for k, v in m.classifiers[0].state_dict().items()}
    before_t = {k: v.clone() for k, v in m.target_encoders[0].state_dict().items()}
    r = fit(m, src, tgt.unlabelled(), steps=5, batch_size=16, progress=False)
    for k, v in m.source_encoders[0].state_dict().items():
        assert torch.equal(v, before_s[k]), f"source encoder {k} changed"
    for k, v in m.classifiers[0].state_dict().items():
        assert torch.equal(v, before_c[k]), f"classifier {k} changed"
    assert any(not torch.equal(v, before_t[k]) for k, v in m.target_encoders[0].state_dict().items())
    # the pre-trained networks themselves are untouched too (ADDA works on copies)
    for k, v in pre.encoders[0].state_dict().items():
        assert torch.equal(v, before_s[k])
    assert {"d_loss", "d_acc", "mapping_loss", "target_pred_entropy"} <= set(r.history[-1])


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


def test_collapse_detected_from_unlabelled_signals():
    cfg = ADDAConfig()
    healthy = [{"seed": 0, "step": s, "d_acc": 0.6, "target_pred_entropy": 0.95} for s in range(1, 21)]
    assert detect_collapse(healthy, 0, cfg) == ""
    d_wins = [dict(r, d_acc=1.0 if r["step"] > 10 else 0.6) for r in healthy]
    assert "discriminator" in detect_collapse(d_wins, 0, cfg)
    one_class = [dict(r, target_pred_entropy=0.05 if r["step"] > 12 else 0.9) for r in healthy]
    assert "collapsed" in detect_collapse(one_class, 0, cfg)


@pytest.mark.parametrize("field,value", [
    ("mapping_loss", "wasserstein"), ("encoder", "resnet"), ("steps", 0), ("pretrain_steps", -1),
    ("batch_size", 1.5), ("lr", 0.0), ("beta1", 1.0), ("collapse_window", 0.0),
])
def test_config_errors_name_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        ADDAConfig(**{field: value}).validate()


def test_mapping_loss_kind_error():
    with pytest.raises(ValueError, match="kind"):
        adda_mapping_loss(torch.zeros(2), "wgan")


def test_registry_and_two_stage_training():
    src, tgt = _domains()
    assert methods.METHODS["adda_minimax"][1]["mapping_loss"] == "minimax"
    res = methods.train("adda_confusion", src, tgt, seeds=[0, 1], eval_sets={"target_test": tgt},
                        progress=False, pretrain_steps=4, steps=4, batch_size=16)
    assert [r.method.seeds for r in res] == [[0], [1]]
    for r in res:
        assert isinstance(r.method, ADDA) and r.method.config.mapping_loss == "confusion"
        assert r.pretrain is not None and r.pretrain.steps == 4 and len(r.pretrain.final) == 1
        assert r.final[0]["status"] in ("ok", "collapsed") and "target_test_acc" in r.final[0]


def test_multi_seed_adda_matches_single_seed_runs():
    src, tgt = _domains()
    cfg = ADDAConfig(pretrain_steps=3, steps=3, batch_size=16, eval_every=3)
    kw = dict(eval_sets={"t": tgt}, progress=False)
    both = train_adda(src, tgt, cfg, seeds=[0, 1], together=True, **kw)[0]
    one = train_adda(src, tgt, cfg, seeds=[1], together=False, **kw)[0]
    assert both.final_for(1)["t_acc"] == one.final_for(1)["t_acc"]
    for a, b in zip(both.method.target_encoders[1].parameters(), one.method.target_encoders[0].parameters()):
        assert torch.allclose(a, b, atol=1e-6)
