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

from .grids import JUDGING_METHODS
from .results import aggregate, format_cell, markdown_table
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


def default_of(defaults: Mapping, method, pair=None):
    """The untuned cell of ``method`` on ``pair`` in ``defaults``: a ``(method, pair)`` key
    overrides the method's own (None when neither is there)."""
    return defaults.get((method, pair), defaults.get(method))


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
        default = default_of(defaults, *group[:2])
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


# -- the picks that feed the other notebooks -------------------------------------------------------
def rule_for_pair(rows, pair, *, methods=None, rules=tuple(RULES)) -> tuple[str, list]:
    """The label-free rule used to choose settings on ``pair``, and the pairs it was judged
    on: the rule with the lowest mean regret over the grids on the **other** pairs of the
    methods that also have a grid on ``pair`` (``methods``; default: those with rows on
    ``pair``; ``rows`` as :func:`~dannlib.selection.judge_rules` gives them). So
    no target label of ``pair`` plays a part in choosing the rule or the setting. Ties go to
    the first rule in ``rules``."""
    here = set(methods) if methods is not None else {r.get("method") for r in rows if r.get("pair") == pair}
    others = [r for r in _finite_rows(rows, "regret") if r.get("pair") != pair and r.get("method") in here
              and r["rule"] in rules and r.get("n_settings", 2) >= 2]  # one setting: regret 0 by construction
    if not others:
        raise ValueError(f"no regret on a pair other than {pair!r}: judge the rules on a second pair first")
    mean = {g["rule"]: g["mean"] for g in aggregate(others, "regret", ["rule"])}
    best = min((r for r in rules if r in mean), key=lambda r: mean[r])
    return best, sorted({r["pair"] for r in others})


def select_setting(records, rule: str, setting, where: Mapping) -> dict | None:
    """The grid cell with the highest score of ``rule``, averaged over seeds, among the
    ``records`` matching every key of ``where`` (e.g. method and pair). Only cells scored on
    **every** seed of the group (a finite score, status "ok") compete, so a cell that diverged
    on some seed cannot win on its lucky ones. Reads the rule's score only, never the oracle.
    Returns the cell as ``{tag: value}`` (tags a record lacks left out), or None when no cell
    qualifies. Ties go to the first cell in record order."""
    setting = tuple(setting)
    mine = [r for r in records if all(r.get(k) == v for k, v in where.items())]
    seeds = {r.get("seed") for r in mine}
    cells: dict[tuple, dict] = {}
    for r in mine:
        value = r.get(rule)
        ok = (r.get("status", "ok") == "ok" and isinstance(value, (int, float)) and math.isfinite(value))
        cells.setdefault(tuple(r.get(k) for k in setting), {})[r.get("seed")] = float(value) if ok else None
    full = {c: v for c, v in cells.items() if set(v) == seeds and all(x is not None for x in v.values())}
    if not full:
        return None
    best = max(full, key=lambda c: sum(full[c].values()) / len(full[c]))
    return {k: v for k, v in zip(setting, best) if v is not None}


def selections(records, rows, setting, *, rules=tuple(RULES), judging=None) -> dict[tuple[str, str], dict]:
    """Per (method, pair) of ``records``: the setting chosen without target labels, as
    ``{"rule", "judged_on", "setting"}``: the rule of :func:`rule_for_pair` (judged on the
    other pairs' grids of the methods ``judging``; None: those with a grid on the pair)
    applied by :func:`select_setting`. A (method, pair) where no cell qualifies is left out."""
    out = {}
    for method, pair in dict.fromkeys((r["method"], r["pair"]) for r in records):
        here = {r["method"] for r in records if r["pair"] == pair}
        rule, judged_on = rule_for_pair(rows, pair, methods=here if judging is None else here & set(judging),
                                        rules=rules)
        chosen = select_setting(records, rule, setting, {"method": method, "pair": pair})
        if chosen is not None:
            out[(method, pair)] = {"rule": rule, "judged_on": judged_on, "setting": chosen}
    return out


def chosen_text(selected: Mapping) -> str:
    """"chosen by RULE on GRID" for one of :func:`selections`' entries."""
    return (f"{_pick_text(selected['setting'])}: chosen by {selected['rule']} (the rule with the lowest mean regret "
            f"on {', '.join(selected['judged_on'])}) on 07's grid")


def grid_description(plan, paper) -> str:
    """Markdown bullets: what 07's ``plan`` (a :class:`dannlib.plan.Plan`) trains, against the
    paper profile's settings ``paper``."""
    s = plan.settings
    n_runs = {}
    for p in plan.runs:
        key = (p.tags["method"], p.tags["pair"])
        n_runs[key] = n_runs.get(key, 0) + 1
    lines = [f"- **{plan.profile}**: {len(plan.seeds)} seed(s) per cell, {len(plan.specs)} runs. DANN and IIMT: "
             f"{s['steps']:,} steps per run, batches of {s['batch_size']} source + {s['batch_size']} target images."]
    for pair in s["pairs"]:
        if s["lr"][pair]:
            lines.append(f"  - {pair}: DANN λ_max {s['lambda_max'][pair]} × learning rate {s['lr'][pair]} × "
                         f"schedule (ramp, constant) + no reversal ({n_runs.get(('dann', pair), 0)} run(s))")
        if s["ramp_max"][pair]:
            lines.append(f"  - {pair}: IIMT ramp maximum {s['ramp_max'][pair]} ({n_runs.get(('iimt', pair), 0)} run(s))")
    a = s["adda"]
    for pair, grid in a["grid"].items():
        if n_runs.get(("adda_gan", pair)):
            pre = "05's" if pair == "MNIST->USPS" else "a"
            lines.append(f"  - {pair}: ADDA-GAN stage-2 learning rate {grid['lr']} × stage-2 length "
                         f"{grid['stage2_steps']} steps (batches of {a['batch_size']}, after {pre} "
                         f"{a['pretrain_steps']:,}-step source pre-training; {n_runs[('adda_gan', pair)]} run(s))")
    where = (f"{s['steps']:,} steps" if plan.profile == "paper" else
             f"{s['steps']:,} steps in this profile, {paper['steps']:,} in the paper profile")
    lines.append("- DANN's and IIMT's grid runs are **shorter than the study's paper length** (10,000 steps in 03 and "
                 f"06): {where} (the grids' budget). Their learning-rate and λ schedules run over the run's own "
                 "length. The rules are judged at this length only; 05 and 06 train the chosen settings at full "
                 "length.")
    if s.get("n_cap"):
        lines.append(f"- Training sets capped at {s['n_cap']} images, tests on the first {s['n_test']} test images.")
    if plan.profile == "smoke":
        lines.append("- **Smoke** checks the code path in seconds; its numbers mean nothing.")
    return "\n".join(lines)


def choice_table(records, rows, setting, defaults: Mapping, committed: Mapping):
    """07's table of the settings chosen for 05 and 06: per (method, pair), the label-free
    choice (:func:`selections`), the oracle's best cell (seed-mean; for reading only), the
    untuned default, and the setting ``committed`` (:data:`dannlib.grids.SELECTED`) holds for
    05 and 06, with whether it is this choice. None when fewer than two pairs have judged grids (no rule can be judged on
    another pair)."""
    import pandas as pd

    scored = [r for r in records if r.get("scores_from") != "missing"]
    judged = [r for r in rows if r["rule"] in RULES and r["n_settings"] >= 2]
    if len({r["pair"] for r in judged}) < 2:
        return None
    out = []
    for (method, pair), c in selections(scored, rows, setting, judging=JUDGING_METHODS).items():
        best = select_setting(scored, ORACLE, setting, {"method": method, "pair": pair}) or {}
        kept = committed.get((method, pair))
        state = ("—" if kept is None else
                 _pick_text(kept["setting"]) + (" (the same)" if kept == c else " (differs from this choice)"))
        out.append({"method": method, "pair": pair, "chosen (label-free)": chosen_text(c),
                    "oracle's best cell (reading only)": _pick_text(best),
                    "untuned default": _pick_text(default_of(defaults, method, pair)),
                    "trained in 05/06 (dannlib.grids.SELECTED, the paper grids' choice)": state})
    return pd.DataFrame(out).set_index(["method", "pair"])


def selection_markdown(records, setting, defaults: Mapping, *, digits: int = 3) -> str:
    """``make report``'s section for notebook 07, from its records (every rule's score and the
    oracle kept in each): per method and pair, the rule to trust with its mean regret and
    Spearman, and the untuned default's and a random pick's mean regret (:func:`trust_table`)."""
    from .selection import judge_rules

    rows = judge_rules(records, setting) + baseline_rows(records, setting, defaults)
    table = trust_table(rows, digits=digits).reset_index()
    cols = ["method", "pair", "rule to trust", "its mean regret", "its mean Spearman",
            f"{DEFAULT}: mean regret", f"{RANDOM}: mean regret"]
    return markdown_table(cols, ([r[c] for c in cols] for _, r in table.iterrows()))
