"""Bad input raises ValueError naming the parameter and the allowed values."""
from __future__ import annotations

import math

import pytest
import torch

from dannlib import methods, profiles, toys
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
