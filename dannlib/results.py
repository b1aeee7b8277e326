"""Results as data: the notebooks' records (JSON lines; flat dicts with at least ``notebook``,
``profile``, ``method``, ``seed``, their metrics and ``status`` "ok", "diverged" or "collapsed"),
the one aggregator (runs not "ok" are counted apart as ``failed``, never averaged in) and the
published numbers the study compares with.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

from .utils import atomic_write

REQUIRED_KEYS = ("notebook", "profile", "method", "seed")
_GANIN, _TZENG = "Ganin et al. 2016 (JMLR), table 2", "Tzeng et al. 2017, table 2"
#: (experiment, method) -> (value, citation): Ganin et al.'s table 2, Tzeng et al.'s table 2 (as
#: REFERENCE.md and public reproductions give it; docs/protocol.md says how each was checked), and
#: the blobs toy's expectations (no paper tabulates it).
PUBLISHED: dict[tuple[str, str], tuple[float, str]] = {
    ("mnist->mnist_m", "source_only"): (0.5225, _GANIN),
    ("mnist->mnist_m", "dann"): (0.7666, _GANIN),
    ("mnist->mnist_m", "train_on_target"): (0.9596, _GANIN),
    ("mnist->usps", "adda_pretrain"): (0.752, f"{_TZENG} (source only)"),
    ("mnist->usps", "dann_lenet"): (0.771, f"{_TZENG} (gradient reversal)"),
    ("mnist->usps", "adda_confusion"): (0.791, f"{_TZENG} (domain confusion)"),
    ("mnist->usps", "adda_gan"): (0.894, f"{_TZENG} (ADDA)"),
    ("usps->mnist", "adda_pretrain"): (0.571, f"{_TZENG} (source only)"),
    ("usps->mnist", "dann_lenet"): (0.730, f"{_TZENG} (gradient reversal)"),
    ("usps->mnist", "adda_confusion"): (0.665, f"{_TZENG} (domain confusion)"),
    ("usps->mnist", "adda_gan"): (0.901, f"{_TZENG} (ADDA)"),
    ("blobs", "source_only"): (0.5, "the toy's construction: about .5 (the shift crosses the boundary)"),
    ("blobs", "dann"): (0.95, "an expectation, not a published number: the blobs toy's source text (a tutorial), about .95"),
}


def published(experiment: str, method: str) -> tuple[float, str] | None:
    """``(value, citation)`` of a published number, or None."""
    return PUBLISHED.get((experiment, method))


def published_text(experiment: str, method: str, digits: int = 4) -> str:
    """A published number as a table cell (``—`` where there is none)."""
    p = published(experiment, method)
    return "—" if p is None else f"{p[0]:.{digits}f}".lstrip("0") + (" (?)" if "(?)" in p[1] else "")


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
    return [_clean(v) for v in value] if isinstance(value, (list, tuple)) else value


def dumps(obj) -> str:
    """Canonical JSON (sorted keys, NaN/inf as strings)."""
    return json.dumps(_clean(obj), sort_keys=True)


def write_records(results_dir, notebook: str, profile: str, records: Iterable[dict]) -> Path:
    """Write ``records`` (each with :data:`REQUIRED_KEYS`) to ``results_dir/profile/notebook.jsonl``, atomically."""
    records = [dict(r) for r in records]
    for i, r in enumerate(records):
        if missing := [k for k in REQUIRED_KEYS if k not in r]:
            raise ValueError(f"record {i} lacks {missing}; every record needs {list(REQUIRED_KEYS)}")
    path = Path(results_dir) / profile / f"{notebook}.jsonl"
    with atomic_write(path) as fh:
        fh.writelines(dumps(r) + "\n" for r in records)
    return path


def read_records(path_or_dir, notebook: str | None = None, profile: str | None = None) -> list[dict]:
    """Read records from one ``.jsonl`` file, or ``dir/profile/notebook.jsonl``."""
    path = Path(path_or_dir) if notebook is None else Path(path_or_dir) / profile / f"{notebook}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no records at {path}; run the notebook (python -m dannlib regenerate) first")
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for fewer than two values)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")


def aggregate(records: Iterable[dict], metric: str, by: Sequence[str] = ("method",)) -> list[dict]:
    """Group ``records`` by the keys ``by`` (first-seen order) and summarise ``metric`` over the
    ok runs: per group the keys' values, ``mean``, ``std`` (sample; NaN for one seed), ``n``,
    ``failed`` (runs not "ok"), and the ok runs' ``values`` and ``seeds``."""
    groups: dict[tuple, dict] = {}
    for r in records:
        key = tuple(r.get(k) for k in by)
        g = groups.setdefault(key, {**dict(zip(by, key)), "values": [], "seeds": [], "failed": 0})
        if r.get("status", "ok") != "ok":
            g["failed"] += 1
        elif r.get(metric) is not None and not isinstance(r[metric], str):
            g["values"].append(float(r[metric]))
            g["seeds"].append(r.get("seed"))
    for g in groups.values():
        g["mean"], g["std"] = mean_std(g["values"])
        g["n"] = len(g["values"])
    return list(groups.values())


def runs_of(records: Iterable[dict], by: str = "seed") -> list[list[dict]]:
    """Pooled history records (as :func:`dannlib.plan.histories` gives them) split into one list per run (per ``by``)."""
    runs: dict = {}
    for r in records:
        runs.setdefault(r.get(by), []).append(r)
    return list(runs.values())


def mean_curve(histories: Sequence[list[dict]], key: str, *, x: str = "step", statuses: Sequence[str] | None = None,
               complete: bool = False) -> dict:
    """The curves' aggregator: ``key`` against ``x`` (ascending) over the runs (one history list
    each) whose status is "ok" (``statuses``, e.g. ``StoredRun.status``; None: each history's last
    ``status``), as :func:`mean_std` at each ``x``. ``complete``: only the x values every ok run
    with ``key`` logged. ``{"x", "mean", "std", "count": lists, "n": ok runs with the key, "failed"}``."""
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
        if not complete or len(values[at]) == n:
            for name, v in zip(("x", "mean", "std", "count"), (at, *mean_std(values[at]), len(values[at]))):
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
    """A DataFrame of :func:`aggregate` cells "mean ± std (n)" indexed by ``by`` (pivoted on
    ``columns`` if given), a ``failed`` column where any run failed, and with ``experiment`` a
    ``published`` column (:data:`PUBLISHED`)."""
    import pandas as pd

    keys = list(by) + ([columns] if columns else [])
    if not records:
        raise ValueError(f"summary_table: no records to tabulate ({metric} by {', '.join(keys)}): every run "
                         "failed or none was fetched; see the errors printed where the runs were fetched")
    df = pd.DataFrame([{**{k: g[k] for k in keys}, metric: format_cell(g["mean"], g["std"], g["n"], digits),
                        "failed": g["failed"]} for g in aggregate(records, metric, keys)])
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
    """Per-seed differences ``metric(variant) - metric(baseline)`` over the seeds both ran ok, within
    each ``group``: per (group, variant) ``mean``, ``std``, ``n``, ``diffs`` and ``seeds``."""
    out = []
    for g in list(dict.fromkeys(r.get(group) for r in records)) if group else [None]:
        rs = [r for r in records if (group is None or r.get(group) == g) and r.get("status", "ok") == "ok"]
        base = {r["seed"]: float(r[metric]) for r in rs if r[by] == baseline}
        for variant in dict.fromkeys(r[by] for r in rs if r[by] != baseline):
            pairs = [(r["seed"], float(r[metric]) - base[r["seed"]]) for r in rs if r[by] == variant and r["seed"] in base]
            diffs = [d for _, d in pairs]
            m, s = mean_std(diffs)
            out.append({"group": g, by: variant, "mean": m, "std": s, "n": len(diffs), "diffs": diffs,
                        "seeds": [p[0] for p in pairs]})
    return out


def markdown_table(header: list[str], rows) -> str:
    """A Markdown table: ``header`` and one row of cells per item of ``rows`` (cells as ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])
