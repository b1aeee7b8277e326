"""The runs each notebook needs under each profile: the one list that the notebooks and
``python -m dannlib sweep`` both read.

Profiles (``dannlib.profiles``): ``smoke`` exercises every code path in seconds (CI);
``quick`` is sized for a 2-core CPU (the whole ``make figures`` in about 20-25 minutes from an empty store);
``paper`` keeps the papers' step counts with 5 seeds on the headline rows and 3 on ablation
variants. Where quick and paper ask for the same run (same method, config, data, seed), the
store computes it once.

Each entry of a plan is a :class:`~dannlib.plan_runs.Planned` run: a
:class:`~dannlib.store.RunSpec` plus ``tags`` for the tables (the toy, the domain pair, the
row's label). The runs of each notebook are built in :mod:`dannlib.plan_runs` (01-06) and
:mod:`dannlib.plan_grids` (07, 08).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .plan_grids import _plan_07, _plan_08
from .plan_runs import _plan_01, _plan_03, _plan_04, _plan_05, _plan_06, Planned
from .plan_runs import TOY_MODES, TOYS  # noqa: F401  (01's toys: the notebook and dannlib.bench read them here)
from .profiles import check_profile
from .store import RunSpec

NOTEBOOKS = {
    "01": "01_toy_blobs",
    "02": "02_mnist_m_construction",
    "03": "03_dann_vs_source_only",
    "04": "04_tsne_embeddings",
    "05": "05_adda_comparison",
    "06": "06_iimt_mixup_ablation",
    "07": "07_model_selection",
    "08": "08_shortfalls",
}


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


_PLANS = {"01": _plan_01, "03": _plan_03, "04": _plan_04, "05": _plan_05, "06": _plan_06, "07": _plan_07,
          "08": _plan_08}


def plan(notebook: str, profile: str, seeds=None) -> Plan:
    """The plan of ``notebook`` (its number, e.g. "03", or file stem) under ``profile``."""
    check_profile(profile)
    number = notebook[:2]
    if number not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOKS.values())}")
    if number not in _PLANS:
        return Plan(NOTEBOOKS[number], profile, [], {}, [])
    settings, seeds, runs = _PLANS[number](profile, seeds)
    return Plan(NOTEBOOKS[number], profile, seeds, settings, runs)


def plan_specs(notebook: str, profile: str, seeds=None) -> list[RunSpec]:
    return plan(notebook, profile, seeds).specs


def parse_only(text: str | Sequence[str] | None) -> list[str] | None:
    """``"01,3"`` -> ``["01", "03"]``; None or empty -> None (all notebooks)."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    numbers = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if not item.isdigit() or len(item) > 2:
            raise ValueError(f"only: {item!r} is not a notebook number (two digits, e.g. 01,03)")
        numbers.append(item.zfill(2))
    return numbers or None


def parse_seeds(text: str | Sequence[int] | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]``; None -> None (each notebook's profile default)."""
    if text is None:
        return None
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    try:
        seeds = [int(s) for s in items if s != ""]
    except (TypeError, ValueError):
        raise ValueError(f"seeds must be comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    from .utils import check_seeds

    return check_seeds(seeds)


def selected_notebooks(only=None) -> list[str]:
    """Notebook numbers in order, restricted to ``only`` (numbers) when given."""
    if not only:
        return list(NOTEBOOKS)
    unknown = [n for n in only if n not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown notebook number(s) {unknown}; known: {', '.join(NOTEBOOKS)}")
    return [n for n in NOTEBOOKS if n in only]


def fetch(notebook: str, profile: str, seeds=None, *, train_missing="auto", **kwargs):
    """The runs of ``notebook``'s plan from the store, training the missing ones per
    ``train_missing`` (see :func:`dannlib.sweep.ensure`: "auto" trains only what takes a few
    minutes and otherwise says how many runs are missing and which command computes them).
    Returns ``(plan, [(tags, StoredRun), ...])`` in plan order; failed computations are left out."""
    from .sweep import check_fetched, ensure

    p = plan(notebook, profile, seeds)
    seed_arg = "" if seeds is None else " --seeds " + ",".join(map(str, p.seeds))
    hint = f"python -m dannlib sweep --profile {profile} --only {notebook[:2]}{seed_arg}"
    stored = ensure(p.specs, train_missing=train_missing, hint=hint, **kwargs)
    runs = [(r.tags, stored[r.spec]) for r in p.runs if r.spec in stored]
    check_fetched(p, runs, ensure.last_summary, hint)
    return p, runs


def coverage_note(plan: Plan, runs, seeds=None) -> str:
    """Markdown saying which of ``plan``'s runs are not among ``runs`` (from :func:`fetch`),
    per tag group (e.g. "iimt, MNIST->USPS: 5 of 5 missing"), and the command that computes
    them; "" when every run is there. Notebooks show it so that a render made while the
    profile's sweep is still running (``train_missing="stored"``) says so."""
    got = {r.spec for _, r in runs}
    groups: dict[str, list[int]] = {}
    for p in plan.runs:
        label = ", ".join(str(v) for v in p.tags.values())
        n = groups.setdefault(label, [0, 0])
        n[1] += 1
        if p.spec not in got:
            n[0] += 1
    missing = {k: v for k, v in groups.items() if v[0]}
    if not missing:
        return ""
    n_missing = sum(p.spec not in got for p in plan.runs)
    seed_arg = "" if seeds is None else " --seeds " + ",".join(map(str, plan.seeds))
    lines = [f"**Incomplete: {n_missing} of {len(plan.runs)} runs of the {plan.profile} profile are not in the "
             f"store**, so the tables and figures below show only the runs that are. Missing:"]
    lines += [f"- {label}: {m} of {n}" for label, (m, n) in missing.items()]
    lines.append(f"\nCompute them with `python -m dannlib sweep --profile {plan.profile} --only "
                 f"{plan.notebook[:2]}{seed_arg}` and run this notebook again.")
    return "\n".join(lines)


def records(notebook: str, profile: str, runs) -> list[dict]:
    """Flat records (one per run) for the tables: the run's record plus its tags, the
    notebook and the profile."""
    return [run.record(**tags, notebook=NOTEBOOKS[notebook[:2]], profile=profile) for tags, run in runs]


def histories(runs, key: str = "method", **match) -> dict[str, list[dict]]:
    """The monitoring histories of ``runs`` (from :func:`fetch`) pooled per value of the tag
    ``key`` (all seeds together, as :func:`dannlib.plotting.plot_method_curves` takes them),
    keeping only runs whose tags match ``match`` (e.g. ``pair="MNIST->USPS"``)."""
    out: dict[str, list[dict]] = {}
    for tags, run in runs:
        if all(tags.get(k) == v for k, v in match.items()):
            out.setdefault(tags[key], []).extend(run.history)
    return out
