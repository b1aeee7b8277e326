"""Bad input raises ValueError naming the parameter (or the domain) and the allowed values,
before any training."""
from __future__ import annotations

import math

import pytest
import torch

from dann_study import profiles
from dannlib import methods, toys
from dannlib.grl import grad_reverse
from dannlib.schedules import grl_lambda
from dannlib.training import Domain


@pytest.fixture(scope="module")
def domains():
    pr = toys.make_blobs_shift(n=40, seed=0)
    return (Domain("s", torch.tensor(pr.xs), torch.tensor(pr.ys)),
            Domain("t", torch.tensor(pr.xt), torch.tensor(pr.yt)))


def test_unknown_method(domains):
    with pytest.raises(ValueError) as e:
        methods.train("dnn", *domains, steps=2, batch_size=4, network="toy", progress=False)
    msg = str(e.value)
    assert "method" in msg and "'dnn'" in msg and "dann" in msg and "source_only" in msg


def test_unknown_profile():
    with pytest.raises(ValueError) as e:
        profiles.check_profile("fast")
    assert "profile" in str(e.value) and all(p in str(e.value) for p in ("smoke", "quick", "paper"))
    with pytest.raises(ValueError, match="profile"):
        profiles.pick({"smoke": {}, "quick": {}, "paper": {}}, "full")


@pytest.mark.parametrize("field, value, allowed", [
    ("mode", "adapt", ["source_only", "domain_only", "dann"]),
    ("network", "resnet", ["toy", "toy_deep", "digits"]),
    ("optimizer", "rmsprop", ["sgd", "adam"]),
    ("lr_schedule", "cosine", ["annealed", "constant"]),
])
def test_unknown_choice(field, value, allowed):
    with pytest.raises(ValueError) as e:
        methods.make_config("dann", **{field: value})
    msg = str(e.value)
    assert field in msg and repr(value) in msg
    assert all(a in msg for a in allowed)


def test_unknown_config_field():
    with pytest.raises(ValueError, match="stepz") as e:
        methods.make_config("dann", stepz=3)
    assert "steps" in str(e.value)


@pytest.mark.parametrize("name", ["steps", "batch_size"])
@pytest.mark.parametrize("value", [0, -3, 2.5, "10"])
def test_non_positive_counts(domains, name, value):
    with pytest.raises(ValueError) as e:
        methods.train("dann", *domains, network="toy", progress=False, **{"steps": 2, "batch_size": 4, name: value})
    assert name in str(e.value) and "positive integer" in str(e.value)


@pytest.mark.parametrize("method, name", [("dann", "lr"), ("dann", "gamma"), ("adda_gan", "lr"),
                                          ("adda_gan", "pretrain_lr"), ("adda_gan", "gamma")])
@pytest.mark.parametrize("value", [0, -0.1, math.nan, math.inf, "0.01", True])
def test_bad_rates(method, name, value):
    """Learning rates and the schedule's gamma: finite numbers > 0; a bool is not a rate."""
    with pytest.raises(ValueError, match=f"{name} must be a finite number > 0, got {value!r}"):
        methods.make_config(method, **{name: value})


def test_batch_larger_than_dataset(domains):
    with pytest.raises(ValueError) as e:
        methods.train("dann", *domains, network="toy", steps=2, batch_size=41, progress=False)
    msg = str(e.value)
    assert "batch_size" in msg and "41" in msg and "40" in msg


@pytest.mark.parametrize("value", [math.nan, math.inf, "one"])
def test_bad_lambda(value):
    with pytest.raises(ValueError, match="lambda_") as e:
        grad_reverse(torch.ones(2), value)
    assert "finite" in str(e.value) or "real number" in str(e.value)


@pytest.mark.parametrize("value", [-1.0, math.inf])
def test_bad_lambda_max(value):
    with pytest.raises(ValueError, match="lambda_max"):
        methods.make_config("dann", lambda_max=value)


@pytest.mark.parametrize("p", [-0.5, 2.0])
def test_progress_out_of_range(p):
    with pytest.raises(ValueError) as e:
        grl_lambda(p)
    assert "p (training progress)" in str(e.value) and "[0, 1]" in str(e.value)


def test_unknown_toy():
    with pytest.raises(ValueError) as e:
        toys.make_toy("spirals")
    assert "'spirals'" in str(e.value) and "blobs" in str(e.value) and "moons" in str(e.value)


# -- every bad input gets a clear error (seeds, data, shapes), before any training ---------
def _images(n=20, size=28, channels=1, seed=0, labels=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=g)
    return x, (torch.arange(n) % 10 if labels else None)


@pytest.mark.parametrize("seeds, words", [
    ([], ["seeds", "at least one seed"]),
    ([-1], ["seeds", "-1", ">= 0"]),
    ([0, 0], ["seeds", "repeat"]),
    (3, ["seeds", "list"]),
    ([1.5], ["seeds", "1.5"]),
])
@pytest.mark.parametrize("method", ["dann", "adda_gan", "iimt"])
def test_bad_seeds(domains, seeds, words, method):
    with pytest.raises(ValueError) as e:
        methods.train(method, *domains, seeds=seeds, steps=2, batch_size=4, progress=False)
    assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_training_or_evaluation_data(bad):
    pr = toys.make_blobs_shift(n=40, seed=0)
    x = torch.tensor(pr.xs)
    x[[3, 7], 1] = bad
    for role in ("source", "target", "evaluation"):
        with pytest.raises(ValueError) as e:
            Domain(role, x, torch.tensor(pr.ys))
        msg = str(e.value)
        assert f"domain {role!r}" in msg and "NaN or infinite" in msg and "2 of 40 samples" in msg


def test_evaluation_labels_out_of_range(domains):
    s, t = domains
    bad = Domain("t_eval", t.x, torch.where(t.y == 1, 2, t.y))  # a class the source does not have
    with pytest.raises(ValueError) as e:
        methods.train("dann", s, t, network="toy", steps=2, batch_size=4, eval_sets={"target_test": bad},
                      progress=False)
    msg = str(e.value)
    assert "evaluation set 'target_test'" in msg and "label 2" in msg and "0..1" in msg
    with pytest.raises(ValueError, match="labels y must be >= 0"):
        Domain("t_eval", t.x, t.y - 1)
    with pytest.raises(ValueError, match="evaluation set 'nolabels' needs labels"):
        methods.train("dann", s, t, network="toy", steps=2, batch_size=4, eval_sets={"nolabels": Domain("u", t.x)},
                      progress=False)


def test_adda_28_vs_32_pixels_refused_before_stage_1(monkeypatch):
    from dannlib.methods.adda import SourcePretrain

    def trained(*args, **kwargs):
        raise AssertionError("stage 1 trained before the domains were checked")

    monkeypatch.setattr(SourcePretrain, "step_one", trained)
    src = Domain("mnist", *_images(size=28))
    tgt = Domain("usps", _images(size=32, labels=False)[0])
    for method in ("adda_gan", "dann_lenet"):
        with pytest.raises(ValueError) as e:
            methods.train(method, src, tgt, pretrain_steps=2, steps=2, batch_size=4, progress=False)
        msg = str(e.value)
        assert "'usps'" in msg and "(1, 32, 32)" in msg and "'mnist'" in msg and "(1, 28, 28)" in msg


@pytest.mark.parametrize("method", ["dann", "iimt", "source_only"])
def test_digits_28_vs_32_pixels(method):
    src = Domain("mnist", *_images(size=28, channels=3))
    tgt = Domain("mnist_m", _images(size=32, channels=3, labels=False)[0])
    with pytest.raises(ValueError) as e:
        methods.train(method, src, tgt, steps=2, batch_size=4, progress=False)
    assert "'mnist_m'" in str(e.value) and "(3, 32, 32)" in str(e.value) and "(3, 28, 28)" in str(e.value)


def test_toy_method_3d_vs_2d_points():
    g = torch.Generator().manual_seed(0)
    src = Domain("s3", torch.randn(20, 3, generator=g), torch.arange(20) % 2)
    tgt = Domain("t2", torch.randn(20, 2, generator=g))
    with pytest.raises(ValueError) as e:
        methods.train("dann", src, tgt, network="toy", steps=2, batch_size=4, progress=False)
    msg = str(e.value)
    assert "target 't2'" in msg and "(2,)" in msg and "'s3'" in msg and "(3,)" in msg
    # the same points as an evaluation set
    with pytest.raises(ValueError) as e:
        methods.train("source_only", src, None, network="toy", steps=2, batch_size=4, progress=False,
                      eval_sets={"t2_eval": Domain("t2", tgt.x, torch.arange(20) % 2)})
    assert "t2_eval" in str(e.value) and "(2,)" in str(e.value) and "(3,)" in str(e.value)


@pytest.mark.parametrize("method, words", [
    ("dann", ["digits network takes images", "'s'", "(40, 2)", "toy network"]),
    ("iimt", ["digits network takes images", "'s'"]),
    ("adda_gan", ["LeNet encoder takes images", "'s'", "(40, 2)"]),
])
def test_image_networks_refuse_points(domains, method, words):
    with pytest.raises(ValueError) as e:
        methods.train(method, *domains, steps=2, batch_size=4, progress=False,
                      **({"pretrain_steps": 2} if method.startswith("adda") else {}))
    assert all(w in str(e.value) for w in words), str(e.value)


def test_toy_network_refuses_images():
    src = Domain("mnist", *_images(size=28))
    with pytest.raises(ValueError) as e:
        methods.train("dann", src, Domain("u", _images(size=28, seed=1, labels=False)[0]), network="toy",
                      steps=2, batch_size=4, progress=False)
    assert "toy networks take points" in str(e.value) and "'mnist'" in str(e.value) and "digits" in str(e.value)
