"""The one paired comparison (every "A against B" of the notebooks, report and README), seed by seed:
on the ``n`` seeds both ran ok, ``d = a - b``, its mean with the 95% paired t-interval ``mean(d) ±
t_{0.975, n-1} sd(d) / sqrt(n)`` (Student 1908), the exact two-sided sign test over the non-zero
differences (smallest p ``2 / 2**n``), and "higher"/"lower" only when the interval excludes 0 and has a width
(not when every seed's difference is the same number)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from .results import mean_std, seed_values

HIGHER, LOWER, UNCLEAR = "higher", "lower", "no clear difference"


@dataclass(frozen=True)
class Comparison:
    """``a - b`` over the shared ``seeds`` (``diffs`` in seed order); ``sd``, ``ci_low``, ``ci_high`` NaN below
    two seeds; ``sign_p`` 1.0 without a non-zero difference; ``n_higher``, ``n_lower``: seeds a > b, a < b."""

    a: str
    b: str
    seeds: tuple
    diffs: tuple
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    sign_p: float
    n_higher: int
    n_lower: int
    verdict: str

    @property
    def n(self) -> int:
        return len(self.diffs)

    def as_row(self, digits: int = 3) -> dict:
        """Table cells: comparison, n, mean diff, 95% CI, sign-test p, verdict."""
        p = self.sign_p
        return {"comparison": f"{self.a} − {self.b}", "n": self.n,
                "mean diff": "—" if self.n == 0 else f"{self.mean:+.{digits}f}",
                "95% CI": format_interval(self.ci_low, self.ci_high, digits),
                "sign-test p": "—" if not self.n else "1" if p >= .9995 else f"{p:.2g}" if p >= .001 else f"{p:.1e}",
                "verdict": self.verdict}


def format_interval(low: float, high: float, digits: int = 3) -> str:
    """``"[+0.012, +0.034]"``; ``"—"`` when undefined (fewer than two seeds)."""
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]" if math.isfinite(low) and math.isfinite(high) else "—"


def t_half_width(sd: float, n: int) -> float:
    """The 95% t-interval's half-width of a mean of ``n`` values with sample sd ``sd``: ``t_{0.975, n-1} sd /
    sqrt(n)`` (NaN below two values)."""
    from scipy import stats
    return float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else float("nan")


def paired(a: Mapping, b: Mapping, *, a_name: str = "a", b_name: str = "b") -> Comparison:
    """Compare ``a`` against ``b``, two mappings seed -> value, on the seeds both hold."""
    from scipy import stats
    seeds = tuple(sorted(set(a) & set(b), key=lambda s: (str(type(s)), s)))
    diffs = tuple(float(a[s]) - float(b[s]) for s in seeds)
    n, (mean, sd) = len(diffs), mean_std(diffs)
    half = t_half_width(sd, n)
    low, high = mean - half, mean + half
    up, down = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    sign_p = float(stats.binomtest(up, up + down, 0.5).pvalue) if up + down else 1.0
    # a verdict needs an interval of some width: the same difference on every seed (sd 0, up to float rounding of
    # the values subtracted) makes the interval a point, which is not evidence of a difference
    wide = n > 1 and sd > 1e-9 * max(1.0, abs(mean))
    verdict = HIGHER if wide and low > 0 else LOWER if wide and high < 0 else UNCLEAR
    return Comparison(a_name, b_name, seeds, diffs, mean, sd, low, high, sign_p, up, down, verdict)


def compare_records(records: Iterable[dict], metric: str, a, b, *, by: str = "method",
                    where: Mapping | None = None, names: Mapping | None = None) -> Comparison:
    """:func:`paired` on ``metric`` of the ok records with ``by`` ``a`` against ``b``, among those matching
    ``where`` (e.g. ``{"pair": "MNIST->USPS"}``); ``names`` renames a and b."""
    records, names, where = list(records), names or {}, {**(where or {})}
    return paired(seed_values(records, metric, {**where, by: a}), seed_values(records, metric, {**where, by: b}),
                  a_name=str(names.get(a, a)), b_name=str(names.get(b, b)))

