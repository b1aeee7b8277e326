"""Training schedules as pure functions of the training progress ``p = step / total`` in
[0, 1] (Ganin et al., JMLR 2016, section 5.2.2)."""
from __future__ import annotations

import math
import numbers


def check_progress(p) -> float:
    """Return ``p`` as float, or raise ValueError if it is not a number in [0, 1]."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise ValueError(f"p (training progress) must be a number in [0, 1], got {p!r}")
    p = float(p)
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"p (training progress) must lie in [0, 1], got {p}")
    return p


def _check_nonneg(name: str, value, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (strict and value == 0):
        raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'}, got {value}")
    return float(value)


def grl_lambda(p: float, gamma: float = 10.0) -> float:
    """Eq. 6: ``lambda_p = 2 / (1 + exp(-gamma * p)) - 1``, rising from 0 at p = 0 towards 1.
    The warm start keeps the domain classifier's noisy early signal from the features."""
    p = check_progress(p)
    gamma = _check_nonneg("gamma", gamma, strict=True)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def annealed_lr(p: float, mu0: float = 0.01, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Eq. 7: ``mu_p = mu0 / (1 + alpha * p) ** beta``."""
    p = check_progress(p)
    mu0 = _check_nonneg("mu0", mu0, strict=True)
    alpha = _check_nonneg("alpha", alpha)
    beta = _check_nonneg("beta", beta)
    return mu0 / (1.0 + alpha * p) ** beta


def linear_ramp(p: float, ramp_end: float = 0.5, maximum: float = 1.0) -> float:
    """A weight rising linearly from 0 at p = 0 to ``maximum`` at ``p = ramp_end``, then
    flat (IIMT's ramp of the target-involving terms). ``ramp_end`` in (0, 1]."""
    p = check_progress(p)
    ramp_end = _check_nonneg("ramp_end", ramp_end, strict=True)
    if ramp_end > 1:
        raise ValueError(f"ramp_end must lie in (0, 1], got {ramp_end}")
    return maximum * min(1.0, p / ramp_end)
