"""Training schedules as pure functions of the training progress ``p = step / total`` in
[0, 1] (Ganin et al., JMLR 2016, section 5.2.2)."""
from __future__ import annotations

import math
import numbers


def check_progress(p) -> float:
    """``p`` as a float, or ValueError unless it is a number in [0, 1]."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p (training progress) must be a number in [0, 1], got {p!r}")
    return float(p)


def _check_nonneg(name: str, value, strict: bool = False) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or value < 0 or (strict and value == 0)):
        raise ValueError(f"{name} must be a finite number {'> 0' if strict else '>= 0'}, got {value!r}")
    return float(value)


def grl_lambda(p: float, gamma: float = 10.0) -> float:
    """Eq. 6: ``lambda_p = 2 / (1 + exp(-gamma * p)) - 1``, rising from 0 at p = 0 towards 1
    (the domain classifier's noisy early signal is kept from the features)."""
    p = check_progress(p)
    return 2.0 / (1.0 + math.exp(-_check_nonneg("gamma", gamma, strict=True) * p)) - 1.0


def annealed_lr(p: float, mu0: float = 0.01, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Eq. 7: ``mu_p = mu0 / (1 + alpha * p) ** beta``."""
    p = check_progress(p)
    mu0 = _check_nonneg("mu0", mu0, strict=True)
    return mu0 / (1.0 + _check_nonneg("alpha", alpha) * p) ** _check_nonneg("beta", beta)


def linear_ramp(p: float, ramp_end: float = 0.5, maximum: float = 1.0) -> float:
    """A weight rising linearly from 0 at p = 0 to ``maximum`` at ``p = ramp_end`` in (0, 1],
    then flat (IIMT's ramp of the target-involving terms)."""
    p = check_progress(p)
    if not 0 < _check_nonneg("ramp_end", ramp_end) <= 1:
        raise ValueError(f"ramp_end must lie in (0, 1], got {ramp_end}")
    return maximum * min(1.0, p / ramp_end)
