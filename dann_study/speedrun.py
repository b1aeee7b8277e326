"""Notebook 09's speedrun (issue 22): DANN on MNIST -> released MNIST-M within ``SPEEDRUN_SECONDS`` of one core. The
cells of ``SPEEDRUN_GRID`` are judged by a label-free rule and run time only; the oracle is shown, never chooses."""
from __future__ import annotations

import math

from dannlib.results import format_cell, markdown_table, mean_std
from dannlib.selection import ORACLE, RULES, SELECTION_FIELD
from dannlib.utils import check_choice

from .grids import SPEEDRUN_GRID, SPEEDRUN_RULE, SPEEDRUN_SECONDS

CELL = tuple(SPEEDRUN_GRID)  # the tags that make a cell: network, precision, optimizer
#: notebook 09's figure: label -> the records of the group
FIGURE_GROUPS = {"grid candidates": lambda r: r.get("cell") == "grid",
                 "dann_speedrun": lambda r: r.get("cell") == "speedrun",
                 "paper recipe (03)": lambda r: r.get("cell") == "paper recipe",
                 **{f"digits_in, 10,000 steps, {p} (oracle diagnostic)":
                    (lambda r, p=p: r.get("cell") == "ceiling" and r.get("precision") == p) for p in ("fp32", "bf16")}}


def run_seconds(record: dict) -> float:
    """A run's time on its core: the whole training call (networks built, training, final evaluation) where the
    record has it (``wall_seconds``), else the training loop alone (``seconds``)."""
    return float(record.get("wall_seconds", record["seconds"]))


def _score(record: dict, rule: str) -> float:
    value = (record.get(SELECTION_FIELD) or {}).get(rule)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def grid_rows(records, *, rule: str = SPEEDRUN_RULE, budget: float = SPEEDRUN_SECONDS) -> list[dict]:
    """One row per grid cell (records tagged ``cell="grid"``): seeds, steps, the slowest run's seconds, whether every
    run kept to ``budget``, each label-free rule's mean score (NaN if a seed has none: never picked), the mean source
    test accuracy and the mean oracle target test accuracy (read from target labels: shown, never used to choose)."""
    check_choice("rule", rule, RULES)
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("cell") == "grid" and r.get("status", "ok") == "ok":
            cells.setdefault(tuple(r[k] for k in CELL), []).append(r)
    rows = []
    for cell, rs in cells.items():
        seconds = [run_seconds(r) for r in rs]
        rows.append({**dict(zip(CELL, cell)), "n": len(rs), "steps": rs[0]["steps"], "max_seconds": max(seconds),
                     "within_budget": max(seconds) <= budget,
                     **{name: mean_std([_score(r, name) for r in rs])[0] for name in dict.fromkeys([rule, *RULES])},
                     "source_test_acc": mean_std([r["source_test_acc"] for r in rs])[0],
                     ORACLE: mean_std([r["target_test_acc"] for r in rs])[0]})
    return rows


def pick(rows, *, rule: str = SPEEDRUN_RULE) -> dict | None:
    """The cell ``{network, precision, optimizer}`` with the best mean ``rule`` score among the rows within the
    budget (None when no row is): the speedrun's recipe, chosen without a target label. Every stored score is
    higher-is-better (:func:`~dannlib.selection.label_free_scores` negates DEV's risk and the entropy)."""
    check_choice("rule", rule, RULES)
    best = max((r for r in rows if r["within_budget"] and math.isfinite(r[rule])), key=lambda r: r[rule], default=None)
    return None if best is None else {k: best[k] for k in CELL}


def grid_table(rows, *, rule: str = SPEEDRUN_RULE, budget: float = SPEEDRUN_SECONDS) -> str:
    """Markdown: the cells, best rule score first, the pick marked."""
    if not rows:
        return "(no grid runs in these records)"
    chosen = pick(rows, rule=rule)
    header = [*CELL, "steps", "seeds", f"slowest run (s), budget {budget:g}", f"{rule} (label-free)",
              "source test acc", "target test acc (oracle: not used)", "picked"]
    body = [[*(r[k] for k in CELL), f"{r['steps']:,}", r["n"], f"{r['max_seconds']:.0f}"
             + ("" if r["within_budget"] else " (over)"), f"{r[rule]:.3f}", f"{r['source_test_acc']:.3f}",
             f"{r[ORACLE]:.3f}", "←" if chosen == {k: r[k] for k in CELL} else ""]
            for r in sorted(rows, key=lambda r: -r[rule] if math.isfinite(r[rule]) else math.inf)]
    return markdown_table(header, body)


def speedrun_table(records, *, budget: float = SPEEDRUN_SECONDS) -> str:
    """Markdown: per group (the speedrun, the paper recipe, the oracle diagnostic in each precision), its steps,
    seeds, mean ± sd target test accuracy, the mean and slowest run's seconds (:func:`run_seconds`) and how many
    runs kept to ``budget``."""
    body = []
    for cell, precision in (("speedrun", None), ("paper recipe", None), ("ceiling", "fp32"), ("ceiling", "bf16")):
        rs = [r for r in records if r.get("cell") == cell and r.get("status", "ok") == "ok"
              and precision in (None, r.get("precision"))]
        if not rs:
            continue
        seconds = [run_seconds(r) for r in rs]
        timed = "whole call" if all("wall_seconds" in r for r in rs) else "training loop only"
        body.append([f"{rs[0]['method']} ({cell}" + (f": {rs[0]['network']}, {precision})" if precision else ")"),
                     ", ".join(f"{s:,}" for s in sorted({r["steps"] for r in rs})),
                     ", ".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"])),
                     format_cell(*mean_std([r["target_test_acc"] for r in rs]), len(rs), 4),
                     f"{sum(seconds) / len(seconds):.0f} / {max(seconds):.0f} ({timed})",
                     f"{sum(s <= budget for s in seconds)} of {len(rs)}"])
    return markdown_table(["run", "steps", "seeds", "target test acc, mean ± sd (n)", "seconds: mean / slowest",
                           f"within {budget:g} s"], body) if body else "(no speedrun or paper-recipe run stored)"


def rule_picks(rows) -> str:
    """Markdown, **read with target labels** (a judgement of the rules afterwards, not a choice): the cell each
    label-free rule would pick within the budget, its mean target test accuracy and its regret against the best
    cell within the budget."""
    within = [r for r in rows if r["within_budget"]]
    if not within:
        return "(no grid runs in these records)" if not rows else "(no cell kept to the budget)"
    best = max(r[ORACLE] for r in within)
    body = []
    for name in RULES:
        chosen = pick(rows, rule=name)
        row = next((r for r in within if chosen == {k: r[k] for k in CELL}), None)
        body.append([name + (" (the speedrun's rule)" if name == SPEEDRUN_RULE else ""),
                     ", ".join(chosen.values()) if chosen else "—",
                     f"{row[ORACLE]:.3f}" if row else "—", f"{best - row[ORACLE]:.3f}" if row else "—"])
    return markdown_table(["rule", "its pick", "pick's target test acc (oracle)", "regret (oracle)"], body)
