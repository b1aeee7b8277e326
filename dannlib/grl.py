"""The gradient reversal layer R_lambda (Ganin & Lempitsky, ICML 2015, eq. 4): forward the identity,
``R(x) = x``; backward the incoming gradient times ``-lambda``, ``dR/dx = -lambda I``. Between G_f and
G_d it lets one SGD step minimise the domain loss in G_d while maximising it in G_f (eq. 2/3).
Stateless: lambda is an argument of every call (eq. 6: :func:`dannlib.schedules.grl_lambda`); it works
under ``torch.func`` transforms (``setup_context``, ``generate_vmap_rule``)."""
from __future__ import annotations

import torch
from torch import nn

from .utils import check_number


def _check_lambda(lambda_) -> float:
    if isinstance(lambda_, torch.Tensor):
        if lambda_.numel() != 1:
            raise ValueError(f"lambda_ must be a scalar, got a tensor of shape {tuple(lambda_.shape)}")
        lambda_ = lambda_.item()
    return check_number("lambda_", lambda_, " (>= 0 reverses the gradient; -1 passes it unchanged, as in the "
                        "domain-only mode)", minimum=None)


class _GradReverse(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, lambda_):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.lambda_ = inputs[1]

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * (-ctx.lambda_), None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """``R_lambda(x)``: ``x`` unchanged (any shape); its gradient is ``-lambda_`` times the incoming
    one. ``lambda_``: a finite real (eq. 6 gives [0, 1]; ``-1`` passes the gradient unchanged)."""
    return _GradReverse.apply(x, _check_lambda(lambda_))


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse` with a fixed ``lambda_``; ``forward(x, lambda_)``
    overrides it for one call."""

    def __init__(self, lambda_: float = 1.0):
        super().__init__()
        self.lambda_ = _check_lambda(lambda_)

    def forward(self, x: torch.Tensor, lambda_: float | None = None) -> torch.Tensor:
        return grad_reverse(x, self.lambda_ if lambda_ is None else lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"
