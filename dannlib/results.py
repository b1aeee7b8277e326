"""Results as data: the notebooks' records (JSON lines), the one aggregator (mean, spread,
n and failed runs over seeds), and the published numbers the study compares with.

A record is a flat dict with at least ``notebook``, ``profile``, ``method`` and ``seed``
plus its metrics (e.g. ``target_test_acc``) and ``status`` ("ok", "diverged",
"collapsed"). Every table and error bar in a notebook, the report or the README goes
through :func:`aggregate`: runs that are not "ok" are counted apart as ``failed`` and never
averaged in.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

from .utils import atomic_write

REQUIRED_KEYS = ("notebook", "profile", "method", "seed")


# -- published numbers: the one table ------------------------------------------------------
#: (experiment, method) -> (value, citation). The DANN numbers were read in the JMLR paper's
#: table 2; the ADDA numbers are table 2 of Tzeng et al. 2017 as the project's digest of the paper
#: (REFERENCE.md) gives them, and as public reproductions quote them identically (the PDF itself
#: was not reachable here): docs/protocol.md says how each entry was checked. Experiments:
#: "mnist->mnist_m", "mnist->usps", "usps->mnist", "blobs".
PUBLISHED: dict[tuple[str, str], tuple[float, str]] = {
    ("mnist->mnist_m", "source_only"): (0.5225, "Ganin et al. 2016 (JMLR), table 2"),
    ("mnist->mnist_m", "dann"): (0.7666, "Ganin et al. 2016 (JMLR), table 2"),
    ("mnist->mnist_m", "train_on_target"): (0.9596, "Ganin et al. 2016 (JMLR), table 2"),
    ("mnist->usps", "adda_pretrain"): (0.752, "Tzeng et al. 2017, table 2 (source only)"),
    ("mnist->usps", "dann_lenet"): (0.771, "Tzeng et al. 2017, table 2 (gradient reversal)"),
    ("mnist->usps", "adda_confusion"): (0.791, "Tzeng et al. 2017, table 2 (domain confusion)"),
    ("mnist->usps", "adda_gan"): (0.894, "Tzeng et al. 2017, table 2 (ADDA)"),
    ("usps->mnist", "adda_pretrain"): (0.571, "Tzeng et al. 2017, table 2 (source only)"),
    ("usps->mnist", "dann_lenet"): (0.730, "Tzeng et al. 2017, table 2 (gradient reversal)"),
    ("usps->mnist", "adda_confusion"): (0.665, "Tzeng et al. 2017, table 2 (domain confusion)"),
    ("usps->mnist", "adda_gan"): (0.901, "Tzeng et al. 2017, table 2 (ADDA)"),
    # The toys: no paper tabulates them (Ganin et al. 2016, sec. 5.1 shows the moons as figures
    # only); these are the expectations of the (non-paper) source text the blobs toy was
    # specified from, target accuracy.
    ("blobs", "source_only"): (0.5, "the toy's construction: about .5 (the shift crosses the boundary)"),
    ("blobs", "dann"): (0.95, "an expectation, not a published number: the blobs toy's source text (a tutorial), about .95"),
}


def published(experiment: str, method: str) -> tuple[float, str] | None:
    """``(value, citation)`` of a published number, or None."""
    return PUBLISHED.get((experiment, method))


def published_text(experiment: str, method: str, digits: int = 4) -> str:
    """A published number as text for a table cell (``—`` where there is none)."""
    p = published(experiment, method)
    if p is None:
        return "—"
    value, cite = p
    return f"{value:.{digits}f}".lstrip("0") + (" (?)" if "(?)" in cite else "")


# -- records ----------------------------------------------------------------------------------
def records_path(results_dir, notebook: str, profile: str) -> Path:
    return Path(results_dir) / profile / f"{notebook}.jsonl"


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN/inf: keep them visible as strings
    if hasattr(value, "item") and callable(value.item):
        try:
            return _clean(value.item())
        except (ValueError, RuntimeError):
            pass
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(obj) -> str:
    """Canonical JSON (sorted keys, NaN/inf as strings)."""
    return json.dumps(_clean(obj), sort_keys=True)


def write_records(results_dir, notebook: str, profile: str, records: Iterable[dict]) -> Path:
    """Write ``records`` as ``results_dir/profile/notebook.jsonl``, atomically (the previous
    file survives a failure). Each record must carry the keys in ``REQUIRED_KEYS``."""
    records = [dict(r) for r in records]
    for i, r in enumerate(records):
        missing = [k for k in REQUIRED_KEYS if k not in r]
        if missing:
            raise ValueError(f"record {i} lacks {missing}; every record needs {list(REQUIRED_KEYS)}")
    path = records_path(results_dir, notebook, profile)
    with atomic_write(path) as fh:
        for r in records:
            fh.write(dumps(r) + "\n")
    return path


def read_records(path_or_dir, notebook: str | None = None, profile: str | None = None) -> list[dict]:
    """Read records from one ``.jsonl`` file, or ``dir/profile/notebook.jsonl``."""
    path = Path(path_or_dir)
    if notebook is not None:
        path = records_path(path, notebook, profile)
    if not path.exists():
        raise FileNotFoundError(f"no records at {path}; run the notebook (python -m dannlib regenerate) first")
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


# -- the one aggregator ------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for fewer than two values)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return m, s


def aggregate(records: Iterable[dict], metric: str, by: Sequence[str] = ("method",)) -> list[dict]:
    """Group ``records`` by the keys ``by`` (first-seen order) and summarise ``metric`` over
    the ok runs: one dict per group with the keys' values and ``mean``, ``std`` (sample, NaN
    for one seed), ``n`` (ok runs with the metric), ``failed`` (runs not "ok"), ``values`` and
    ``seeds`` (of the ok runs)."""
    groups: dict[tuple, dict] = {}
    for r in records:
        key = tuple(r.get(k) for k in by)
        g = groups.setdefault(key, {**dict(zip(by, key)), "values": [], "seeds": [], "failed": 0})
        if r.get("status", "ok") != "ok":
            g["failed"] += 1
        elif r.get(metric) is not None and not (isinstance(r[metric], str)):
            g["values"].append(float(r[metric]))
            g["seeds"].append(r.get("seed"))
    out = []
    for g in groups.values():
        g["mean"], g["std"] = mean_std(g["values"])
        g["n"] = len(g["values"])
        out.append(g)
    return out


def runs_of(records: Iterable[dict], by: str = "seed") -> list[list[dict]]:
    """Pooled history records (several runs' ``RunResult.history`` together, as
    :func:`dannlib.plan.histories` returns them) split back into one list per run (per ``by``)."""
    runs: dict = {}
    for r in records:
        runs.setdefault(r.get(by), []).append(r)
    return list(runs.values())


def mean_curve(histories: Sequence[list[dict]], key: str, *, x: str = "step", statuses: Sequence[str] | None = None,
               complete: bool = False) -> dict:
    """The curves' aggregator: ``key`` against ``x`` over runs (``histories``: one list of
    history records per run), the mean and the spread (sample std, NaN for one value, as
    :func:`mean_std`) at each ``x`` (ascending) over the runs with status "ok", the runs the
    tables keep (:func:`aggregate`). ``statuses``: each run's status (e.g. ``StoredRun.status``,
    which knows ADDA's "collapsed"); None: each run's last record's ``status`` (fit marks
    "diverged" there). ``complete``: only the x values every ok run with ``key`` logged.
    Returns ``{"x", "mean", "std", "count": lists, "n": ok runs with the key, "failed": runs
    left out}``."""
    histories = [list(h) for h in histories]
    if statuses is None:
        statuses = [h[-1].get("status", "ok") if h else "ok" for h in histories]
    ok = [h for h, status in zip(histories, statuses) if status == "ok"]
    values: dict = {}
    n = 0
    for h in ok:
        n += any(key in rec for rec in h)
        for rec in h:
            v = rec.get(key)
            if rec.get(x) is not None and v is not None and not (isinstance(v, float) and math.isnan(v)):
                values.setdefault(rec[x], []).append(float(v))
    out = {"x": [], "mean": [], "std": [], "count": [], "n": n, "failed": len(histories) - len(ok)}
    for at in sorted(values):
        vs = values[at]
        if complete and len(vs) != n:
            continue
        m, sd = mean_std(vs)
        for name, v in (("x", at), ("mean", m), ("std", sd), ("count", len(vs))):
            out[name].append(v)
    return out


def format_cell(mean: float, std: float, n: int, digits: int = 3) -> str:
    """``"0.745 ± 0.012 (5)"``; one seed: ``"0.745 (1 seed: no spread)"``; none: ``"—"``."""
    if n == 0:
        return "—"
    if n == 1 or not math.isfinite(std):
        return f"{mean:.{digits}f} (1 seed: no spread)"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({n})"


def summary_table(records: list[dict], metric: str, by=("method",), columns: str | None = None,
                  digits: int = 4, experiment: str | None = None):
    """A pandas DataFrame of :func:`aggregate` cells "mean ± std (n)" indexed by ``by``
    (pivoted on ``columns`` if given), with a ``failed`` column where any run failed and, when
    ``experiment`` is given, a ``published`` column from :data:`PUBLISHED`."""
    import pandas as pd

    keys = list(by) + ([columns] if columns else [])
    if not records:
        raise ValueError(f"summary_table: no records to tabulate ({metric} by {', '.join(keys)}): every run "
                         "failed or none was fetched; see the errors printed where the runs were fetched")
    rows = aggregate(records, metric, keys)
    df = pd.DataFrame([{**{k: g[k] for k in keys}, metric: format_cell(g["mean"], g["std"], g["n"], digits),
                        "failed": g["failed"]} for g in rows])
    if columns:
        table = df.pivot(index=list(by), columns=columns, values=metric)
        failed = df.groupby(list(by), sort=False)["failed"].sum()
    else:
        table = df.set_index(list(by))[[metric]]
        failed = df.set_index(list(by))["failed"]
    if failed.sum():
        table = table.join(failed.rename("failed"))
    if experiment is not None and list(by) == ["method"]:
        table["published"] = [published_text(experiment, m) for m in table.index]
    return table


def paired_differences(records: list[dict], metric: str, baseline: str, by: str = "method",
                       group: str | None = None) -> list[dict]:
    """Per-seed paired differences ``metric(variant) - metric(baseline)`` over the seeds both
    ran ok (within each ``group``, e.g. the domain pair): one dict per (group, variant) with
    ``mean``, ``std``, ``n``, ``diffs`` and ``seeds``."""
    out = []
    groups = list(dict.fromkeys(r.get(group) for r in records)) if group else [None]
    for g in groups:
        rs = [r for r in records if (group is None or r.get(group) == g) and r.get("status", "ok") == "ok"]
        base = {r["seed"]: float(r[metric]) for r in rs if r[by] == baseline}
        for variant in dict.fromkeys(r[by] for r in rs):
            if variant == baseline:
                continue
            pairs = [(r["seed"], float(r[metric]) - base[r["seed"]]) for r in rs
                     if r[by] == variant and r["seed"] in base]
            diffs = [d for _, d in pairs]
            m, s = mean_std(diffs)
            out.append({"group": g, by: variant, "mean": m, "std": s, "n": len(diffs), "diffs": diffs,
                        "seeds": [p[0] for p in pairs]})
    return out


def markdown_table(header: list[str], rows) -> str:
    """A Markdown table: ``header`` and one row of cells per item of ``rows`` (cells as ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
