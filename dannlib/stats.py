"""The one paired comparison: every "A against B" in the notebooks, the report and the README.

Two methods run on the same seed see the same initial network (where they share it), the
same batches and the same test set, so the study compares them seed by seed. For the seeds
on which both ran ok, with ``d_i = a_i - b_i`` (``n`` of them):

- the mean difference ``mean(d)`` and its 95% paired t-interval
  ``mean(d) ± t_{0.975, n-1} · sd(d) / sqrt(n)`` (``sd`` with ddof 1; Student 1908, the paired
  t-test of any statistics text);
- the exact two-sided sign-test p-value: ``binomtest(k, m, 0.5)`` where ``m`` is the number of
  non-zero differences and ``k`` how many of them are positive (zeros carry no sign and are
  dropped, the usual convention);
- the verdict "higher" or "lower" only when the interval excludes 0, otherwise
  "no clear difference" (with one seed there is no interval, hence no verdict either).

With 3 seeds, ``t_{0.975, 2} = 4.30``: a difference must be large against its spread to
count. The sign test makes no normality assumption; with ``n`` seeds its smallest possible
p-value is ``2 / 2**n`` (0.25 at 3 seeds, 0.0625 at 5), which is worth knowing before reading it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

HIGHER, LOWER, UNCLEAR = "higher", "lower", "no clear difference"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of ``a`` against ``b`` (``a - b``) over the seeds both share."""

    a: str
    b: str
    seeds: tuple
    diffs: tuple          # a - b, one per shared seed, in seed order
    mean: float           # mean difference (NaN for n = 0)
    sd: float             # sample sd of the differences (ddof 1; NaN for n < 2)
    ci_low: float         # 95% paired t-interval (NaN for n < 2)
    ci_high: float
    sign_p: float         # exact two-sided sign-test p-value (1.0 when no difference is non-zero)
    n_higher: int         # seeds where a > b
    n_lower: int          # seeds where a < b
    verdict: str          # "higher", "lower" or "no clear difference"

    @property
    def n(self) -> int:
        return len(self.diffs)

    def as_row(self, digits: int = 3) -> dict:
        """Table cells: comparison, n, mean diff, 95% CI, sign-test p, verdict."""
        return {"comparison": f"{self.a} − {self.b}", "n": self.n,
                "mean diff": "—" if self.n == 0 else f"{self.mean:+.{digits}f}",
                "95% CI": format_interval(self.ci_low, self.ci_high, digits),
                "sign-test p": format_p(self.sign_p) if self.n else "—",
                "verdict": self.verdict}


def format_interval(low: float, high: float, digits: int = 3) -> str:
    """``"[+0.012, +0.034]"``; ``"—"`` when undefined (fewer than two seeds)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "—"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def format_p(p: float) -> str:
    """A p-value with two significant digits (``0.062``, ``1``)."""
    return "1" if p >= 0.9995 else f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def paired(a: Mapping, b: Mapping, *, a_name: str = "a", b_name: str = "b",
           confidence: float = CONFIDENCE) -> Comparison:
    """Compare ``a`` against ``b``, two mappings seed -> value, on the seeds both hold (the
    others are ignored: a comparison is only ever made on shared seeds)."""
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    seeds = tuple(sorted(set(a) & set(b), key=lambda s: (str(type(s)), s)))
    diffs = tuple(float(a[s]) - float(b[s]) for s in seeds)
    n = len(diffs)
    mean = sum(diffs) / n if n else float("nan")
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else float("nan")
    if n > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        low = high = float("nan")
    up, down = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    sign_p = float(stats.binomtest(up, up + down, 0.5).pvalue) if up + down else 1.0
    if n > 1 and low > 0:
        verdict = HIGHER
    elif n > 1 and high < 0:
        verdict = LOWER
    else:
        verdict = UNCLEAR
    return Comparison(a_name, b_name, seeds, diffs, mean, sd, low, high, sign_p, up, down, verdict)


def _values(records: Iterable[dict], metric: str, where: Mapping) -> dict:
    """seed -> metric of the ok records matching every ``where`` item (one per seed)."""
    out = {}
    for r in records:
        if r.get("status", "ok") != "ok" or any(r.get(k) != v for k, v in where.items()):
            continue
        v = r.get(metric)
        if v is None or isinstance(v, str):
            continue
        if r.get("seed") in out:
            raise ValueError(f"two records for seed {r.get('seed')} match {dict(where)}: "
                             "narrow `where` (e.g. add the pair) so that each seed has one value")
        out[r.get("seed")] = float(v)
    return out


def compare_records(records: Iterable[dict], metric: str, a, b, *, by: str = "method",
                    where: Mapping | None = None, names: Mapping | None = None,
                    confidence: float = CONFIDENCE) -> Comparison:
    """:func:`paired` on records: ``metric`` of the ok records with ``record[by] == a`` against
    those with ``record[by] == b``, restricted to records matching ``where`` (e.g.
    ``{"pair": "MNIST->USPS"}``). ``names`` renames ``a`` and ``b`` for display."""
    records = list(records)
    where = dict(where or {})
    names = names or {}
    return paired(_values(records, metric, {**where, by: a}), _values(records, metric, {**where, by: b}),
                  a_name=str(names.get(a, a)), b_name=str(names.get(b, b)), confidence=confidence)
