"""Tables for notebook 08, which diagnoses the study's shortfalls with controlled runs: where a
monitored curve peaks and how far it falls by the end, what a label-free companion curve (an
adversary's accuracy) did meanwhile, and two recipes side by side.

The monitored target accuracy is read from the run's history: a diagnosis of what happened, never
a way to pick a checkpoint (that would be model selection on target labels).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as _stats


def curve_summary(runs, metric: str = "target_test_acc", companion: str | None = None) -> pd.DataFrame:
    """One row per stored run ``(tags, run)``: its tags and seed, the ``metric``'s peak (value and
    step), its last value, the fall from peak to end; with ``companion`` (a label-free logged
    value, e.g. ADDA's discriminator accuracy ``d_acc``), the companion at the peak and at the end,
    and the Spearman correlation of the two curves after the peak (over at least 3 logged points)."""
    rows = []
    for tags, run in runs:
        h = [r for r in run.history if r.get(metric) is not None]
        if not h:
            continue
        values = np.array([r[metric] for r in h], dtype=float)
        k = int(np.argmax(values))
        row = {**tags, "seed": run.spec.seed, "peak": values[k], "peak step": h[k]["step"], "last": values[-1],
               "fall": values[k] - values[-1]}
        if companion is not None:
            comp = np.array([r.get(companion, np.nan) for r in h], dtype=float)
            row[f"{companion} at peak"] = comp[k]
            row[f"{companion} last"] = comp[-1]
            after = slice(k, None)
            ok = np.isfinite(comp[after])
            rho = (_stats.spearmanr(values[after][ok], comp[after][ok]).statistic
                   if ok.sum() >= 3 and np.ptp(comp[after][ok]) > 0 and np.ptp(values[after][ok]) > 0 else np.nan)
            row[f"spearman({metric}, {companion}) after peak"] = rho
        rows.append(row)
    return pd.DataFrame(rows)


def recipe_table(specs: dict, fields=None) -> pd.DataFrame:
    """Settings of several runs side by side: ``specs`` maps a label to a
    :class:`~dannlib.store.RunSpec`; one row per config or data field in which they differ (all
    of ``fields`` when given)."""
    cols = {}
    for label, spec in specs.items():
        cols[label] = {"method": spec.method, **{f"data.{k}": v for k, v in spec.data.items()}, **spec.config}
    keys = list(dict.fromkeys(k for c in cols.values() for k in c))
    if fields is None:
        keys = [k for k in keys if len({repr(c.get(k)) for c in cols.values()}) > 1]
    else:
        keys = [k for k in fields if k in keys]
    return pd.DataFrame({label: [c.get(k, "—") for k in keys] for label, c in cols.items()}, index=keys).astype(str)


def against(records, metric: str, reference: str, others, where: dict | None = None, digits: int = 3) -> str:
    """A Markdown table of paired comparisons (:mod:`dannlib.stats`): each of ``others`` minus
    ``reference`` on ``metric``, on the seeds both share, among the records matching ``where``."""
    from .report import comparison_table
    from .stats import compare_records

    rows = [(None, metric, compare_records(records, metric, o, reference, where=where)) for o in others]
    return comparison_table([r for r in rows if r[2].n], digits=digits)


def max_history_difference(run_a, run_b, keys=("target_test_acc", "source_test_acc", "label_loss")) -> float:
    """The largest absolute difference between two runs' logged values of ``keys`` at the same
    steps (0.0: the two runs trained identically, as far as their logs show)."""
    steps_b = {h["step"]: h for h in run_b.history}
    diffs = [abs(h[k] - steps_b[h["step"]][k]) for h in run_a.history if h["step"] in steps_b
             for k in keys if h.get(k) is not None and steps_b[h["step"]].get(k) is not None]
    if not diffs:
        raise ValueError("the two runs share no logged step and key")
    return max(diffs)
