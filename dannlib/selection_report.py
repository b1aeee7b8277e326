"""Notebook 07's tables: the label-free selection rules (:mod:`dannlib.selection`) judged
against the oracle over a grid of settings, summarised over seeds with the one aggregator
(:func:`dannlib.results.aggregate`), beside two baselines that read no label either:

- the **untuned default** setting (the one the other notebooks train), scored as if a rule
  had picked it on every seed;
- a **random pick**: the expected regret of a setting drawn uniformly from the grid (the
  mean, over the settings, of the oracle's best accuracy minus the setting's).

The input is :func:`dannlib.selection.judge_rules`'s rows (one per group, seed and rule, with
``regret``, ``spearman`` and ``pick``) plus :func:`baseline_rows`' rows in the same format.
The oracle (target test accuracy, read from target labels) only judges; it is named
"oracle" in every table.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from .results import aggregate, format_cell
from .selection import ORACLE, RULES

#: the baselines' rule names in the rows and tables
DEFAULT, RANDOM = "untuned default", "random pick (expected)"
#: verdicts of :func:`trust_table`, from best to worst
VERDICTS = ("trust", "picks well, ranks badly", "no better than the untuned default", "no better than a random pick",
            "fewer than two settings", "no score")


def _grids(records, setting: Sequence[str], by: Sequence[str], oracle: str) -> dict:
    """(group, seed) -> {cell: oracle accuracy} over the records with a finite oracle."""
    grids: dict[tuple, dict[tuple, float]] = {}
    for r in records:
        value = r.get(oracle)
        if value is None or isinstance(value, str) or not math.isfinite(float(value)):
            continue
        key = (tuple(r.get(k) for k in by), r.get("seed"))
        grids.setdefault(key, {})[tuple(r.get(k) for k in setting)] = float(value)
    return grids


def baseline_rows(records, setting: Sequence[str], defaults: Mapping[str, Mapping], *, by=("method", "pair"),
                  oracle: str = ORACLE) -> list[dict]:
    """Per group ``by`` and seed: the regret of the untuned default cell (``defaults``: the
    value of ``by[0]``, e.g. the method, -> its default setting as tag -> value; a group
    without a default, or whose default cell has no finite oracle, gets none) and the expected
    regret of a uniformly random cell, as rows like :func:`~dannlib.selection.judge_rules`'s
    (``rule`` = :data:`DEFAULT` or :data:`RANDOM`; ``spearman`` nan: a baseline ranks
    nothing). Cells without a finite oracle (no score, or a run not stored) are not in the
    grid."""
    setting = tuple(setting)
    rows = []
    for (group, seed), grid in _grids(records, setting, by, oracle).items():
        best = max(grid.values())
        base = {**dict(zip(by, group)), "seed": seed, "spearman": float("nan"), "n_settings": len(grid)}
        default = defaults.get(group[0])
        if default is not None:
            cell = tuple(default.get(k) for k in setting)
            if cell in grid:
                rows.append({**base, "rule": DEFAULT, "pick": dict(default), "regret": best - grid[cell]})
        rows.append({**base, "rule": RANDOM, "pick": None,
                     "regret": sum(best - v for v in grid.values()) / len(grid)})
    return rows


def _finite_rows(rows, metric):
    return [r for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]


def _pick_text(pick) -> str:
    return "—" if not pick else ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in pick.items() if v is not None)


def selection_table(rows, *, by=("method", "pair"), digits: int = 3):
    """A pandas DataFrame indexed by ``by`` and rule: the settings scored per seed (fewest to
    most; with one, every regret is 0 by construction), the **regret** (the oracle's best target
    accuracy minus that of the rule's pick; mean ± sd over seeds, their number in brackets),
    the seeds on which the rule picked the oracle's best setting, the **Spearman** rank
    correlation of the rule's scores with the oracle over the grid (mean ± sd over seeds), and
    the rule's most frequent pick. Seeds on which a rule scored no setting are left out of its
    cells (counted in ``no score``)."""
    import pandas as pd

    keys = list(by) + ["rule"]
    regret = {tuple(g[k] for k in keys): g for g in aggregate(_finite_rows(rows, "regret"), "regret", keys)}
    spear = {tuple(g[k] for k in keys): g for g in aggregate(_finite_rows(rows, "spearman"), "spearman", keys)}
    out = []
    order = list(dict.fromkeys(tuple(r.get(k) for k in by) for r in rows))  # each group's rules together
    for key in sorted(dict.fromkeys(tuple(r.get(k) for k in keys) for r in rows), key=lambda k: order.index(k[:-1])):
        mine = [r for r in rows if tuple(r.get(k) for k in keys) == key]
        g, s = regret.get(key), spear.get(key)
        picks = [_pick_text(r["pick"]) for r in mine if r.get("pick")]
        common = max(dict.fromkeys(picks), key=picks.count) if picks else "—"
        sizes = sorted({r["n_settings"] for r in mine if "n_settings" in r})
        out.append({**dict(zip(keys, key)),
                    "settings scored per seed": "–".join(map(str, dict.fromkeys([sizes[0], sizes[-1]]))) if sizes
                    else "—",
                    "regret (oracle best − pick)": format_cell(g["mean"], g["std"], g["n"], digits) if g else "—",
                    "picked the oracle's best": (f"{sum(v == 0 for v in g['values'])} of {g['n']}" if g else "—"),
                    "Spearman with the oracle": format_cell(s["mean"], s["std"], s["n"], digits) if s else "—",
                    "most frequent pick": f"{common} ({picks.count(common)} of {len(picks)})" if picks else "—",
                    "no score": len(mine) - (g["n"] if g else 0)})
    return pd.DataFrame(out).set_index(keys)


def verdicts(rows, *, by=("method", "pair")) -> list[dict]:
    """Per group ``by`` and label-free rule: mean regret and mean Spearman over seeds, the
    baselines' mean regrets, and a verdict (:data:`VERDICTS`): "no score" (no seed scored);
    "no better than a random pick" (mean regret >= the random pick's); "no better than the
    untuned default" (>= the default's); "picks well, ranks badly" (below both, but a mean
    Spearman <= 0 or none: its good picks are not backed by its ranking of the grid); else
    "trust". "fewer than two settings" comes first when no seed's grid had two settings
    scored (nothing to choose between). On few seeds: means, not tests."""
    keys = list(by) + ["rule"]
    mean = {tuple(g[k] for k in keys): g for g in aggregate(_finite_rows(rows, "regret"), "regret", keys)}
    spear = {tuple(g[k] for k in keys): g for g in aggregate(_finite_rows(rows, "spearman"), "spearman", keys)}
    out = []
    for group in dict.fromkeys(tuple(r.get(k) for k in by) for r in rows):
        base = {b: mean.get(group + (b,), {}).get("mean", float("nan")) for b in (DEFAULT, RANDOM)}
        for rule in dict.fromkeys(r["rule"] for r in rows if tuple(r.get(k) for k in by) == group):
            if rule in (DEFAULT, RANDOM, ORACLE):  # baselines and the oracle are not judged
                continue
            g, s = mean.get(group + (rule,)), spear.get(group + (rule,))
            m = g["mean"] if g else float("nan")
            rho = s["mean"] if s else float("nan")
            if not g:
                verdict = "no score"
            elif max(r["n_settings"] for r in rows if tuple(r.get(k) for k in by) == group and r["rule"] == rule) < 2:
                verdict = "fewer than two settings"  # nothing to choose between: regret 0 by construction
            elif not m < base[RANDOM]:  # also when the baseline is nan: nothing to beat is no evidence
                verdict = "no better than a random pick"
            elif math.isfinite(base[DEFAULT]) and not m < base[DEFAULT]:
                verdict = "no better than the untuned default"
            elif not rho > 0:
                verdict = "picks well, ranks badly"
            else:
                verdict = "trust"
            out.append({**dict(zip(by, group)), "rule": rule, "regret": m, "spearman": rho,
                        "n": g["n"] if g else 0, "default_regret": base[DEFAULT], "random_regret": base[RANDOM],
                        "verdict": verdict})
    return out


def trust_table(rows, *, by=("method", "pair"), digits: int = 3):
    """Which rule to trust for which method: a pandas DataFrame indexed by ``by``, with the
    rule to trust (the lowest mean regret among the rules judged "trust" by :func:`verdicts`,
    or "none"), its mean regret and Spearman, the baselines' mean regrets, and the rules in
    each other verdict."""
    import pandas as pd

    judged = verdicts(rows, by=by)
    out = []
    for group in dict.fromkeys(tuple(v[k] for k in by) for v in judged):
        mine = sorted((v for v in judged if tuple(v[k] for k in by) == group), key=lambda v: v["regret"])
        trusted = [v for v in mine if v["verdict"] == "trust"]
        best = trusted[0] if trusted else None
        row = {**dict(zip(by, group)), "rule to trust": best["rule"] if best else "none",
               "its mean regret": f"{best['regret']:.{digits}f} ({best['n']} seeds)" if best else "—",
               "its mean Spearman": f"{best['spearman']:.{digits}f}" if best else "—",
               f"{DEFAULT}: mean regret": _num(mine[0]["default_regret"], digits),
               f"{RANDOM}: mean regret": _num(mine[0]["random_regret"], digits)}
        for verdict in VERDICTS:
            row[verdict] = ", ".join(v["rule"] for v in mine if v["verdict"] == verdict) or "—"
        out.append(row)
    return pd.DataFrame(out).set_index(list(by))


def _num(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "—"


def rule_glossary():
    """The rules and the oracle as a pandas DataFrame: name, what it measures, and the
    direction of its natural quantity (tables use scores with higher is better)."""
    import pandas as pd

    rows = [{"rule": k, "what it measures": what, "natural quantity": "higher is better" if up else
             "lower is better (negated in the scores)", "reads target labels": "no"} for k, (up, what) in RULES.items()]
    rows.append({"rule": ORACLE, "what it measures": "target test accuracy: the oracle, never a rule",
                 "natural quantity": "higher is better", "reads target labels": "yes (oracle)"})
    return pd.DataFrame(rows).set_index("rule")
