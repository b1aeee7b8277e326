"""The gradient reversal layer (eq. 4): identity forward, exactly -lambda times the plain
gradient backward, also under torch.func transforms."""
from __future__ import annotations

import math

import pytest
import torch

from dannlib.grl import GradientReversal, grad_reverse

LAMBDAS = [0.0, 0.3, 1.0, 2.5, -1.0]
DTYPES = [torch.float32, torch.float64]


def _head(dtype):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, generator=g, dtype=dtype)
    return lambda h: (torch.tanh(h @ w) ** 2).sum()


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_is_identity(dtype):
    x = torch.randn(7, 5, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for lam in LAMBDAS:
        y = grad_reverse(x, lam)
        assert y.dtype == dtype
        assert torch.equal(y, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lam", LAMBDAS)
def test_gradient_is_minus_lambda_times_plain(dtype, lam):
    head = _head(dtype)
    x = torch.randn(7, 5, dtype=dtype, generator=torch.Generator().manual_seed(2), requires_grad=True)
    (plain,) = torch.autograd.grad(head(x), x)
    (reversed_,) = torch.autograd.grad(head(grad_reverse(x, lam)), x)
    # Multiplying by -lambda is one exact floating-point operation on each element.
    assert torch.equal(reversed_, plain * (-lam))
    # Inside a graph (layer after a scaling), equal up to rounding of the chain rule.
    (plain_s,) = torch.autograd.grad(head(x * 1.5), x)
    (rev_s,) = torch.autograd.grad(head(grad_reverse(x * 1.5, lam)), x)
    torch.testing.assert_close(rev_s, plain_s * (-lam), rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=0)
    if lam != -1.0:  # -1 passes the gradient unchanged (domain-only mode); others change it
        assert not torch.equal(reversed_, plain)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0, -1.0])
def test_per_sample_gradients_under_vmap(dtype, lam):
    head = _head(dtype)
    x = torch.randn(6, 5, dtype=dtype, generator=torch.Generator().manual_seed(3))

    def plain(xi):
        return head(xi)

    def rev(xi):
        return head(grad_reverse(xi, lam))

    g_plain = torch.func.vmap(torch.func.grad(plain))(x)
    g_rev = torch.func.vmap(torch.func.grad(rev))(x)
    assert g_rev.shape == x.shape
    assert torch.equal(g_rev, g_plain * (-lam))
    # and each per-sample gradient is the one autograd gives for that sample alone
    for i in range(len(x)):
        xi = x[i].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(rev(xi), xi)
        torch.testing.assert_close(g_rev[i], gi, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_module(dtype):
    head = _head(dtype)
    x = torch.randn(4, 5, dtype=dtype, generator=torch.Generator().manual_seed(4), requires_grad=True)
    (plain,) = torch.autograd.grad(head(x), x)
    layer = GradientReversal(0.25)
    assert "0.25" in repr(layer)
    assert torch.equal(layer(x), x)
    (g,) = torch.autograd.grad(head(layer(x)), x)
    assert torch.equal(g, plain * -0.25)
    (g2,) = torch.autograd.grad(head(layer(x, 2.0)), x)  # per-call override
    assert torch.equal(g2, plain * -2.0)
    assert list(layer.parameters()) == []  # no learned state, no step counter


def test_lambda_tensor_scalar_accepted():
    x = torch.ones(3, requires_grad=True)
    (g,) = torch.autograd.grad(grad_reverse(x, torch.tensor(0.5)).sum(), x)
    assert torch.equal(g, torch.full((3,), -0.5))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "1.0", None, True, torch.ones(2)])
def test_bad_lambda_raises(bad):
    x = torch.ones(3)
    with pytest.raises(ValueError, match="lambda_"):
        grad_reverse(x, bad)
    with pytest.raises(ValueError, match="lambda_"):
        GradientReversal(bad)
