"""Training schedules as pure functions of the training progress ``p = step / total`` in
[0, 1] (Ganin et al., JMLR 2016, section 5.2.2)."""
from __future__ import annotations

import math
import numbers

from .utils import check_number


def check_progress(p) -> float:
    """``p`` as a float, or ValueError unless it is a number in [0, 1]."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p (training progress) must be a number in [0, 1], got {p!r}")
    return float(p)


def grl_lambda(p: float, gamma: float = 10.0) -> float:
    """Eq. 6: ``lambda_p = 2 / (1 + exp(-gamma * p)) - 1``, rising from 0 at p = 0 towards 1
    (the domain classifier's noisy early signal is kept from the features)."""
    return 2.0 / (1.0 + math.exp(-check_progress(p) * check_number("gamma", gamma))) - 1.0


def annealed_lr(p: float, mu0: float = 0.01, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Eq. 7: ``mu_p = mu0 / (1 + alpha * p) ** beta``."""
    p, mu0 = check_progress(p), check_number("mu0", mu0)
    return mu0 / (1.0 + check_number("alpha", alpha, strict=False) * p) ** check_number("beta", beta, strict=False)


def linear_ramp(p: float, ramp_end: float = 0.5, maximum: float = 1.0) -> float:
    """A weight rising linearly from 0 at p = 0 to ``maximum`` at ``p = ramp_end`` in (0, 1],
    then flat (IIMT's ramp of the target-involving terms)."""
    p = check_progress(p)
    if not 0 < check_number("ramp_end", ramp_end, strict=False) <= 1:
        raise ValueError(f"ramp_end must lie in (0, 1], got {ramp_end}")
    return maximum * min(1.0, p / ramp_end)
