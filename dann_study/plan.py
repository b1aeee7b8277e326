"""The runs each notebook needs under each profile (:mod:`dann_study.profiles`): the one list that the
notebooks and ``python -m dann_study sweep`` both read. A run that several profiles ask for is computed
once. Each entry is a :class:`~dann_study.plan_runs.Planned` run, built in :mod:`dann_study.plan_runs`
(01-06; 02 reads 03's networks) and :mod:`dann_study.plan_grids` (07-09).
"""
from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from dannlib.store import RunSpec
from dannlib.utils import check_seeds

from .plan_grids import _plan_07, _plan_08, _plan_09
from .plan_runs import (TOY_MODES, TOYS,  # noqa: F401  (01's toys: the notebook and benchmarks.bench read them here)
                        Planned, _plan_01, _plan_02, _plan_03, _plan_04, _plan_05, _plan_06)
from .profiles import check_profile

NOTEBOOKS = {"01": "01_toy_blobs", "02": "02_mnist_m_construction", "03": "03_dann_vs_source_only",
             "04": "04_tsne_embeddings", "05": "05_adda_comparison", "06": "06_iimt_mixup_ablation",
             "07": "07_model_selection", "08": "08_shortfalls", "09": "09_speedrun"}
_PLANS = {"01": _plan_01, "02": _plan_02, "03": _plan_03, "04": _plan_04, "05": _plan_05, "06": _plan_06,
          "07": _plan_07, "08": _plan_08, "09": _plan_09}


@dataclass
class Plan:
    """A notebook's runs under a profile, with its seeds and settings."""

    notebook: str
    profile: str
    seeds: list[int]
    settings: dict
    runs: list[Planned]

    @property
    def specs(self) -> list[RunSpec]:
        return list(dict.fromkeys(p.spec for p in self.runs))


def plan(notebook: str, profile: str, seeds=None) -> Plan:
    """The plan of ``notebook`` (its number, e.g. "03", or file stem) under ``profile``."""
    check_profile(profile)
    number = notebook[:2]
    if number not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOKS.values())}")
    settings, seeds, runs = _PLANS[number](profile, seeds)
    return Plan(NOTEBOOKS[number], profile, seeds, settings, runs)


def plan_specs(notebook: str, profile: str, seeds=None) -> list[RunSpec]:
    return plan(notebook, profile, seeds).specs


def needed_runs(profile: str) -> list[RunSpec]:
    """Every distinct run the notebooks need under ``profile``: each plan's runs after the runs they start from
    (ADDA's pre-trainings), each once."""
    return list(dict.fromkeys(run for nb in NOTEBOOKS for spec in plan_specs(nb, profile)
                              for run in [*spec.dependencies(), spec]))


def parse_only(text: str | Sequence[str] | None) -> list[str] | None:
    """``"01,3"`` -> ``["01", "03"]``; None or an empty sequence -> None (all notebooks); a text without a number
    (``","``, ``" "``) is refused."""
    if text is None:
        return None
    numbers = []
    for item in (str(i).strip() for i in (text.split(",") if isinstance(text, str) else text)):
        if item and (not item.isdigit() or len(item) > 2):
            raise ValueError(f"only: {item!r} is not a notebook number (two digits, e.g. 01,03)")
        numbers += [item.zfill(2)] if item else []
    if isinstance(text, str) and not numbers:
        raise ValueError(f"only: no notebook number in {text!r} (e.g. 01,03; leave the option out for every notebook)")
    return numbers or None


def parse_seeds(text: str | Sequence[int] | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]``; None -> None (each notebook's profile default)."""
    if text is None:
        return None
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    try:
        if any(isinstance(s, str) and s and not re.fullmatch(r"[+-]?\d+", s) for s in items):
            raise ValueError  # int() would read "1_0" as 10
        seeds = [int(s) for s in items if s != ""]
    except (TypeError, ValueError):
        raise ValueError(f"seeds must be comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    return check_seeds(seeds)


def selected_notebooks(only=None) -> list[str]:
    """Notebook numbers in order, restricted to ``only`` (numbers) when given."""
    unknown = [n for n in only or () if n not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown notebook number(s) {unknown}; known: {', '.join(NOTEBOOKS)}")
    return [n for n in NOTEBOOKS if not only or n in only]


def _sweep_command(p: Plan, seeds) -> str:
    seed_arg = "" if seeds is None else " --seeds " + ",".join(map(str, p.seeds))
    return f"python -m dann_study sweep --profile {p.profile} --only {p.notebook[:2]}{seed_arg}"


def fetch(notebook: str, profile: str, seeds=None, *, train_missing="auto", **kwargs):
    """The runs of ``notebook``'s plan from the store, training the missing ones per
    ``train_missing`` (:func:`dannlib.sweep.ensure`). Returns ``(plan, [(tags, StoredRun), ...])``
    in plan order; failed runs are left out, with a warning that lists them, and
    :class:`~dannlib.sweep.RunsFailedError` says why when no run could be had."""
    from dannlib.sweep import RunsFailedError, ensure
    p = plan(notebook, profile, seeds)
    hint = _sweep_command(p, seeds)
    stored = ensure(p.specs, train_missing=train_missing, hint=hint, **kwargs)
    runs = [(r.tags, stored[r.spec]) for r in p.runs if r.spec in stored]
    failed = ensure.last_summary.failed
    listing = "".join(f"\n  - {label}: {err}" for label, err in failed[:20])
    listing += f"\n  - ... and {len(failed) - 20} more" if len(failed) > 20 else ""
    if p.runs and not runs:
        raise RunsFailedError(f"{p.notebook} [{p.profile}]: " + (
            f"all {len(p.specs)} runs failed; {len(failed)} raised:{listing}" if failed
            else f"none of its {len(p.specs)} runs is in the store yet; compute them with `{hint}`"))
    if failed:
        warnings.warn(f"{p.notebook} [{p.profile}]: {len(failed)} run(s) failed and are left out:{listing}",
                      stacklevel=2)
    return p, runs


def coverage_note(plan: Plan, runs, seeds=None) -> str:
    """Markdown saying which of ``plan``'s runs are not among ``runs`` (from :func:`fetch`), per
    tag group, and the command that computes them; "" when every run is there."""
    got = {r.spec for _, r in runs}
    total = Counter(", ".join(map(str, p.tags.values())) for p in plan.runs)
    missing = Counter(", ".join(map(str, p.tags.values())) for p in plan.runs if p.spec not in got)
    if not missing:
        return ""
    lines = [f"**Incomplete: {missing.total()} of {len(plan.runs)} runs of the {plan.profile} profile are not in the "
             f"store**, so the tables and figures below show only the runs that are. Missing:"]
    lines += [f"- {label}: {missing[label]} of {n}" for label, n in total.items() if missing[label]]
    lines.append(f"\nCompute them with `{_sweep_command(plan, seeds)}` and run this notebook again.")
    return "\n".join(lines)


def records(notebook: str, profile: str, runs) -> list[dict]:
    """Flat records (one per run): the run's record plus its tags, the notebook and the profile."""
    return [run.record(**tags, notebook=NOTEBOOKS[notebook[:2]], profile=profile) for tags, run in runs]


def histories(runs, key: str = "method", **match) -> dict[str, list[dict]]:
    """The monitoring histories of ``runs`` (from :func:`fetch`) pooled per value of the tag
    ``key`` (all seeds together), keeping only runs whose tags match ``match``. Each run's last record carries
    the run's status (:attr:`~dannlib.store.StoredRun.status`: e.g. ADDA's "collapsed", kept only in its final
    evaluation), the one the curves' aggregator reads, so curves leave out the runs the tables leave out."""
    out: dict[str, list[dict]] = {}
    for tags, run in runs:
        if all(tags.get(k) == v for k, v in match.items()):
            history = list(run.history)
            if history:
                history[-1] = {**history[-1], "status": run.status}
            out.setdefault(tags[key], []).extend(history)
    return out
