"""Notebook 08's tables. The monitored target accuracy diagnoses what happened; it never picks a checkpoint."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as _stats


def curve_summary(runs, metric: str = "target_test_acc", companion: str | None = None) -> pd.DataFrame:
    """Per ``(tags, run)``: ``metric``'s peak (value, step), last value and fall; with ``companion`` (a label-free
    logged value one could watch instead of the target labels, e.g. ADDA's discriminator accuracy ``d_acc``), its
    value at the peak and last, and the two curves' Spearman correlation after the peak (>= 3 points). Runs that did
    not finish "ok" (diverged, collapsed) are left out, as the tables and curves leave them out."""
    rows = []
    for tags, run in runs:
        if run.status != "ok":
            continue
        h = [r for r in run.history if r.get(metric) is not None]
        if not h:
            continue
        values = np.array([r[metric] for r in h], dtype=float)
        k = int(np.argmax(values))
        row = {**tags, "seed": run.spec.seed, "peak": values[k], "peak step": h[k]["step"], "last": values[-1],
               "fall": values[k] - values[-1]}
        if companion is not None:
            comp = np.array([r.get(companion, np.nan) for r in h], dtype=float)
            ok = np.isfinite(comp[k:])
            v, c = values[k:][ok], comp[k:][ok]
            row[f"{companion} at peak"], row[f"{companion} last"] = comp[k], comp[-1]
            row[f"spearman({metric}, {companion}) after peak"] = (
                _stats.spearmanr(v, c).statistic if ok.sum() >= 3 and np.ptp(c) > 0 and np.ptp(v) > 0 else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def recipe_table(specs: dict) -> pd.DataFrame:
    """``specs`` (label -> ``RunSpec``) side by side: the config and data fields that differ."""
    cols = {label: {"method": s.method, **{f"data.{k}": v for k, v in s.data.items()}, **s.config}
            for label, s in specs.items()}
    keys = list(dict.fromkeys(k for c in cols.values() for k in c))
    keys = [k for k in keys if len({repr(c.get(k)) for c in cols.values()}) > 1]
    return pd.DataFrame({label: [c.get(k, "—") for k in keys] for label, c in cols.items()}, index=keys).astype(str)


def against(records, metric: str, reference: str, others) -> str:
    """Markdown paired comparisons (:mod:`dannlib.stats`) of each of ``others`` minus ``reference`` on ``metric``."""
    from dannlib.stats import compare_records

    from .report import comparison_table
    rows = [(None, metric, compare_records(records, metric, o, reference)) for o in others]
    return comparison_table([r for r in rows if r[2].n])


def max_history_difference(run_a, run_b, keys=("target_test_acc", "source_test_acc", "label_loss")) -> float:
    """The largest absolute difference of two runs' logged ``keys`` at the same steps (0.0: identical logs)."""
    steps_b = {h["step"]: h for h in run_b.history}
    diffs = [abs(h[k] - steps_b[h["step"]][k]) for h in run_a.history if h["step"] in steps_b
             for k in keys if h.get(k) is not None and steps_b[h["step"]].get(k) is not None]
    if not diffs:
        raise ValueError("the two runs share no logged step and key")
    return max(diffs)
