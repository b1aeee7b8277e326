"""Eq. 6 and eq. 7 against values worked out by hand from the formulas."""
from __future__ import annotations

import math

import pytest

from dannlib.schedules import annealed_lr, grl_lambda, linear_ramp


def test_grl_lambda_by_hand():
    assert grl_lambda(0.0) == 0.0                                  # 2/(1+e^0)-1 = 2/2-1
    assert grl_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1, rel=1e-15)
    assert grl_lambda(0.5) == pytest.approx(0.98661429815, abs=1e-11)
    assert grl_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1, rel=1e-15)
    assert grl_lambda(1.0) == pytest.approx(0.99990920426, abs=1e-11)
    assert grl_lambda(0.5, gamma=1.0) == pytest.approx(0.24491866240, abs=1e-11)  # tanh(0.25)
    assert grl_lambda(1, gamma=2) == pytest.approx(math.tanh(1.0), rel=1e-14)


def test_grl_lambda_is_increasing():
    values = [grl_lambda(i / 100) for i in range(101)]
    assert all(b > a for a, b in zip(values, values[1:]))


def test_annealed_lr_by_hand():
    assert annealed_lr(0.0) == 0.01                                # 0.01 / 1^0.75
    assert annealed_lr(0.5) == pytest.approx(0.01 / 6 ** 0.75, rel=1e-15)
    assert annealed_lr(0.5) == pytest.approx(0.0026084743, abs=1e-10)
    assert annealed_lr(1.0) == pytest.approx(0.01 / 11 ** 0.75, rel=1e-15)
    assert annealed_lr(1.0) == pytest.approx(0.00165560026, abs=1e-11)
    assert annealed_lr(1.0, mu0=0.1, alpha=3.0, beta=0.5) == pytest.approx(0.05, rel=1e-15)  # 0.1/sqrt(4)
    assert annealed_lr(0.7, alpha=0.0) == 0.01


def test_linear_ramp():
    assert linear_ramp(0.0) == 0.0
    assert linear_ramp(0.25) == 0.5
    assert linear_ramp(0.5) == 1.0
    assert linear_ramp(1.0) == 1.0
    assert linear_ramp(0.1, ramp_end=0.2, maximum=3.0) == pytest.approx(1.5)
    assert linear_ramp(0.9, ramp_end=1.0) == pytest.approx(0.9)


@pytest.mark.parametrize("fn", [grl_lambda, annealed_lr, linear_ramp])
@pytest.mark.parametrize("p", [-0.01, 1.01, math.nan, math.inf, "0.5", None, True])
def test_bad_progress(fn, p):
    with pytest.raises(ValueError, match=r"p \(training progress\)") as e:
        fn(p)
    assert "[0, 1]" in str(e.value)


@pytest.mark.parametrize("kwargs, name", [
    ({"gamma": 0.0}, "gamma"), ({"gamma": -1.0}, "gamma"), ({"gamma": math.nan}, "gamma"), ({"gamma": "10"}, "gamma"),
])
def test_bad_gamma(kwargs, name):
    with pytest.raises(ValueError, match=name):
        grl_lambda(0.5, **kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"mu0": 0.0}, "mu0"), ({"mu0": -0.01}, "mu0"), ({"mu0": math.inf}, "mu0"), ({"mu0": "0.01"}, "mu0"),
    ({"alpha": -1.0}, "alpha"), ({"beta": -0.5}, "beta"), ({"beta": math.nan}, "beta"),
])
def test_bad_lr_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        annealed_lr(0.5, **kwargs)


@pytest.mark.parametrize("ramp_end", [0.0, -0.5, 1.5])
def test_bad_ramp_end(ramp_end):
    with pytest.raises(ValueError, match="ramp_end"):
        linear_ramp(0.5, ramp_end=ramp_end)
