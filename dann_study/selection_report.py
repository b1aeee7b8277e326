"""Notebook 07's tables: the label-free rules judged against the oracle over seeds, beside two baselines
that read no label either: the untuned default cell and a random pick (its expected regret)."""
from __future__ import annotations

import math
from collections import Counter
from typing import Mapping, Sequence

import pandas as pd

from dannlib.results import aggregate, format_cell, markdown_table, usable
from dannlib.selection import ORACLE, RULES, judge_rules

from .grids import JUDGING_METHODS

#: the baselines' rule names in the rows and tables
DEFAULT, RANDOM = "untuned default", "random pick (expected)"
#: verdicts of :func:`trust_table`, from best to worst
VERDICTS = ("trust", "picks well, ranks badly", "picks well, ranking not measured",
            "no better than the untuned default", "no better than a random pick", "fewer than two settings", "no score")
BY, KEYS = ("method", "pair"), ("method", "pair", "rule")


def _key(r, keys) -> tuple:
    return tuple(r.get(k) for k in keys)


def baseline_rows(records, setting: Sequence[str], defaults: Mapping[str, Mapping], *, by=BY) -> list[dict]:
    """``judge_rules``-like rows per group and seed over the ok cells with a finite oracle: the untuned cell's regret
    (``defaults``: method or (method, pair) -> {tag: value}) as :data:`DEFAULT`, the mean regret as :data:`RANDOM`."""
    grids, rows = {}, []
    for r in records:  # the runs that finished ok, as judge_rules takes them
        if usable(r, ORACLE):
            grids.setdefault((_key(r, by), r.get("seed")), {})[_key(r, setting)] = float(r[ORACLE])
    for (group, seed), grid in grids.items():
        best = max(grid.values())
        base = {**dict(zip(by, group)), "seed": seed, "spearman": float("nan"), "n_settings": len(grid)}
        default = defaults.get(group[:2], defaults.get(group[0]))
        if default is not None and (cell := _key(default, setting)) in grid:
            rows.append({**base, "rule": DEFAULT, "pick": dict(default), "regret": best - grid[cell]})
        rows.append({**base, "rule": RANDOM, "pick": None, "regret": sum(best - v for v in grid.values()) / len(grid)})
    return rows


def _finite_rows(rows, metric):
    return [r for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]


def _summaries(rows, metric) -> dict:
    return {_key(g, KEYS): g for g in aggregate(_finite_rows(rows, metric), metric, KEYS)}


def _pick_text(pick) -> str:
    return "—" if not pick else ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in pick.items() if v is not None)


def selection_table(rows):
    """Per method, pair and rule: settings per seed, regret (oracle's best minus the pick's target accuracy), seeds
    picking the best, Spearman with the oracle, the most frequent pick, seeds without a score."""
    out, regret, spear = [], _summaries(rows, "regret"), _summaries(rows, "spearman")
    order = list(dict.fromkeys(_key(r, BY) for r in rows))  # each group's rules together
    for key in sorted(dict.fromkeys(_key(r, KEYS) for r in rows), key=lambda k: order.index(k[:-1])):
        mine, g, s = [r for r in rows if _key(r, KEYS) == key], regret.get(key), spear.get(key)
        picks = [_pick_text(r["pick"]) for r in mine if r.get("pick")]
        common = max(dict.fromkeys(picks), key=picks.count) if picks else "—"
        sizes = sorted({r["n_settings"] for r in mine if "n_settings" in r}) or ["—"]
        out.append({**dict(zip(KEYS, key)),
                    "settings scored per seed": "–".join(map(str, dict.fromkeys([sizes[0], sizes[-1]]))),
                    "regret (oracle best − pick)": format_cell(g["mean"], g["std"], g["n"]) if g else "—",
                    "picked the oracle's best": (f"{sum(v == 0 for v in g['values'])} of {g['n']}" if g else "—"),
                    "Spearman with the oracle": format_cell(s["mean"], s["std"], s["n"]) if s else "—",
                    "most frequent pick": f"{common} ({picks.count(common)} of {len(picks)})" if picks else "—",
                    "no score": len(mine) - (g["n"] if g else 0)})
    return pd.DataFrame(out).set_index(list(KEYS))


def verdicts(rows) -> list[dict]:
    """Per method, pair and label-free rule: mean regret and Spearman, the baselines' mean regrets, and the first
    verdict that holds of: no score, fewer than two settings, no better than a random pick or the untuned default
    (mean regret not below theirs), picks well, ranks badly (mean Spearman not > 0), trust."""
    out, mean, spear = [], _summaries(rows, "regret"), _summaries(rows, "spearman")
    for group in dict.fromkeys(_key(r, BY) for r in rows):
        base = {b: mean.get(group + (b,), {}).get("mean", float("nan")) for b in (DEFAULT, RANDOM)}
        mine = [r for r in rows if _key(r, BY) == group]
        for rule in dict.fromkeys(r["rule"] for r in mine if r["rule"] not in (DEFAULT, RANDOM, ORACLE)):
            g, s = mean.get(group + (rule,)), spear.get(group + (rule,))
            m, rho = g["mean"] if g else float("nan"), s["mean"] if s else float("nan")
            verdict = ("no score" if not g else
                       "fewer than two settings" if max(r["n_settings"] for r in mine if r["rule"] == rule) < 2 else
                       "no better than a random pick" if not m < base[RANDOM] else  # a nan baseline: no evidence
                       "no better than the untuned default" if math.isfinite(base[DEFAULT]) and not m < base[DEFAULT]
                       else "trust" if rho > 0 else "picks well, ranks badly" if math.isfinite(rho)
                       else "picks well, ranking not measured")  # Spearman undefined: fewer than 3 cells, ties
            out.append({**dict(zip(BY, group)), "rule": rule, "regret": m, "spearman": rho, "n": g["n"] if g else 0,
                        "default_regret": base[DEFAULT], "random_regret": base[RANDOM], "verdict": verdict})
    return out


def trust_table(rows):
    """Per method and pair: the "trust" rule of lowest mean regret (or "none"), the baselines, each verdict's rules."""
    judged, out = verdicts(rows), []
    for group in dict.fromkeys(_key(v, BY) for v in judged):
        mine = sorted((v for v in judged if _key(v, BY) == group),
                      key=lambda v: (not math.isfinite(v["regret"]), v["regret"]))  # NaN (no score) last
        best = next((v for v in mine if v["verdict"] == "trust"), None)
        base = {f"{b}: mean regret": f"{x:.3f}" if math.isfinite(x := mine[0][f"{k}_regret"]) else "—"
                for b, k in ((DEFAULT, "default"), (RANDOM, "random"))}
        out.append({**dict(zip(BY, group)), "rule to trust": best["rule"] if best else "none",
                    "its mean regret": f"{best['regret']:.3f} ({best['n']} seeds)" if best else "—",
                    "its mean Spearman": f"{best['spearman']:.3f}" if best else "—", **base,
                    **{k: ", ".join(v["rule"] for v in mine if v["verdict"] == k) or "—" for k in VERDICTS}})
    return pd.DataFrame(out).set_index(list(BY))


def rule_glossary():
    """The rules and the oracle: what each measures, which way is better."""
    rows = [{"rule": k, "what it measures": what, "natural quantity": "higher is better" if up else
             "lower is better (negated in the scores)", "reads target labels": "no"} for k, (up, what) in RULES.items()]
    rows.append({"rule": ORACLE, "what it measures": "target test accuracy: the oracle, never a rule",
                 "natural quantity": "higher is better", "reads target labels": "yes (oracle)"})
    return pd.DataFrame(rows).set_index("rule")


def rule_for_pair(rows, pair, *, methods=None, rules=tuple(RULES)) -> tuple[str, list]:
    """``(rule, pairs judged on)``: the lowest mean regret on the grids (of two cells or more) of the **other**
    pairs of ``methods`` (default: those on ``pair``): no target label of ``pair`` chooses it."""
    here = set(methods) if methods is not None else {r.get("method") for r in rows if r.get("pair") == pair}
    others = [r for r in _finite_rows(rows, "regret") if r.get("pair") != pair and r.get("method") in here
              and r["rule"] in rules and r.get("n_settings", 2) >= 2]
    if not others:
        raise ValueError(f"no regret on a pair other than {pair!r}: judge the rules on a second pair first")
    mean = {g["rule"]: g["mean"] for g in aggregate(others, "regret", ["rule"])}
    return min((r for r in rules if r in mean), key=lambda r: mean[r]), sorted({r["pair"] for r in others})


def select_setting(records, rule: str, setting, where: Mapping) -> dict | None:
    """The cell of highest seed-mean ``rule`` score among those matching ``where`` and ok on every seed, or None."""
    mine = [r for r in records if all(r.get(k) == v for k, v in where.items())]
    seeds, cells = {r.get("seed") for r in mine}, {}
    for r in mine:
        ok = r.get("status", "ok") == "ok" and isinstance(v := r.get(rule), (int, float)) and math.isfinite(v)
        cells.setdefault(_key(r, setting), {})[r.get("seed")] = float(v) if ok else None
    full = {c: v for c, v in cells.items() if set(v) == seeds and all(x is not None for x in v.values())}
    best = max(full, key=lambda c: sum(full[c].values()) / len(full[c])) if full else None
    return None if best is None else {k: v for k, v in zip(setting, best) if v is not None}


def selections(records, rows, setting, *, rules=tuple(RULES), judging=None) -> dict[tuple[str, str], dict]:
    """Per (method, pair): ``{"rule", "judged_on", "setting"}``: :func:`rule_for_pair` (on the methods
    ``judging``; None: all) applied by :func:`select_setting`."""
    out = {}
    for method, pair in dict.fromkeys((r["method"], r["pair"]) for r in records):
        here = {r["method"] for r in records if r["pair"] == pair and (judging is None or r["method"] in judging)}
        rule, judged_on = rule_for_pair(rows, pair, methods=here, rules=rules)
        if (chosen := select_setting(records, rule, setting, {"method": method, "pair": pair})) is not None:
            out[(method, pair)] = {"rule": rule, "judged_on": judged_on, "setting": chosen}
    return out


def chosen_text(selected: Mapping) -> str:
    return (f"{_pick_text(selected['setting'])}: chosen by {selected['rule']} (the rule with the lowest mean regret "
            f"on {', '.join(selected['judged_on'])}) on 07's grid")


def grid_description(plan, paper) -> str:
    """Markdown bullets: what 07's ``plan`` trains, against the paper profile's settings ``paper``."""
    s, a, n_runs = plan.settings, plan.settings["adda"], Counter((p.tags["method"], p.tags["pair"]) for p in plan.runs)
    lines = [f"- **{plan.profile}**: {len(plan.seeds)} seed(s) per cell, {len(plan.specs)} runs. DANN and IIMT: "
             f"{s['steps']:,} steps per run, batches of {s['batch_size']} source + {s['batch_size']} target images."]
    for pair in s["pairs"]:
        if s["lr"][pair]:
            lines.append(f"  - {pair}: DANN λ_max {s['lambda_max'][pair]} × learning rate {s['lr'][pair]} × "
                         f"schedule (ramp, constant) + no reversal ({n_runs['dann', pair]} run(s))")
        if s["ramp_max"][pair]:
            lines.append(f"  - {pair}: IIMT ramp maximum {s['ramp_max'][pair]} ({n_runs['iimt', pair]} run(s))")
    for pair, grid in a["grid"].items():
        if n_runs["adda_gan", pair]:
            pre = "05's" if pair == "MNIST->USPS" else "a"
            lines.append(f"  - {pair}: ADDA-GAN stage-2 learning rate {grid['lr']} × stage-2 length "
                         f"{grid['stage2_steps']} steps (batches of {a['batch_size']}, after {pre} "
                         f"{a['pretrain_steps']:,}-step source pre-training; {n_runs['adda_gan', pair]} run(s))")
    where = (f"{s['steps']:,} steps" if plan.profile == "paper" else
             f"{s['steps']:,} steps in this profile, {paper['steps']:,} in the paper profile")
    lines.append("- DANN's and IIMT's grid runs are **shorter than the study's paper length** (10,000 steps in 03 and "
                 f"06): {where} (the grids' budget). Their learning-rate and λ schedules run over the run's own "
                 "length. The rules are judged at this length only; 05 and 06 train the chosen settings at full "
                 "length.")
    if s.get("n_cap"):
        lines.append(f"- Training sets capped at {s['n_cap']} images, tests on {s['n_test']} test images drawn at "
                     "random (the data spec's `subset_seed`).")
    if plan.profile == "smoke":
        lines.append("- **Smoke** checks the code path in seconds; its numbers mean nothing.")
    return "\n".join(lines)


def choice_table(records, rows, setting, defaults: Mapping, committed: Mapping):
    """Per (method, pair): the label-free choice, the oracle's best cell, the untuned one, what ``committed``
    (:data:`dann_study.grids.SELECTED`) trains in 05/06. None with fewer than two judged pairs."""
    scored, out = [r for r in records if r.get("scores_from") != "missing"], []
    if len({r["pair"] for r in rows if r["rule"] in RULES and r["n_settings"] >= 2}) < 2:
        return None
    for (method, pair), c in selections(scored, rows, setting, judging=JUDGING_METHODS).items():
        best = select_setting(scored, ORACLE, setting, {"method": method, "pair": pair}) or {}
        state = "—" if (kept := committed.get((method, pair))) is None else _pick_text(kept["setting"]) + (
            " (the same)" if kept == c else " (differs from this choice)")
        out.append({"method": method, "pair": pair, "chosen (label-free)": chosen_text(c),
                    "oracle's best cell (reading only)": _pick_text(best),
                    "untuned default": _pick_text(defaults.get((method, pair), defaults.get(method))),
                    "trained in 05/06 (dann_study.grids.SELECTED, the paper grids' choice)": state})
    return pd.DataFrame(out).set_index(["method", "pair"])


def selection_markdown(records, setting, defaults: Mapping) -> str:
    """``make report``'s section for 07: :func:`trust_table`'s rule to trust and the baselines, in Markdown."""
    table = trust_table(judge_rules(records, setting) + baseline_rows(records, setting, defaults)).reset_index()
    cols = ["method", "pair", "rule to trust", "its mean regret", "its mean Spearman",
            f"{DEFAULT}: mean regret", f"{RANDOM}: mean regret"]
    return markdown_table(cols, ([r[c] for c in cols] for _, r in table.iterrows()))
