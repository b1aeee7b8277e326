"""Records (flat dicts with ``notebook``, ``profile``, ``method``, ``seed``, metrics, ``status``) as JSON lines,
the one aggregator (runs not "ok" counted as ``failed``, never averaged) and the published numbers."""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .utils import atomic_write

REQUIRED_KEYS = ("notebook", "profile", "method", "seed")
_GANIN, _TZENG = "Ganin et al. 2016 (JMLR), table 2", "Tzeng et al. 2017, table 2"
#: (experiment, method) -> (value, citation): Ganin et al.'s and Tzeng et al.'s tables 2 (checked as
#: docs/protocol.md says), and the blobs toy's expectations (no paper tabulates it).
PUBLISHED: dict[tuple[str, str], tuple[float, str]] = {
    ("mnist->mnist_m", "source_only"): (0.5225, _GANIN),
    ("mnist->mnist_m", "dann"): (0.7666, _GANIN),
    ("mnist->mnist_m", "train_on_target"): (0.9596, _GANIN),
    ("mnist->mnist_m", "dann_speedrun"): (0.7666, f"{_GANIN} (DANN; notebook 09's target)"),
    ("mnist->usps", "adda_pretrain"): (0.752, f"{_TZENG} (source only)"),
    ("mnist->usps", "dann_lenet"): (0.771, f"{_TZENG} (gradient reversal)"),
    ("mnist->usps", "adda_confusion"): (0.791, f"{_TZENG} (domain confusion)"),
    ("mnist->usps", "adda_gan"): (0.894, f"{_TZENG} (ADDA)"),
    ("usps->mnist", "adda_pretrain"): (0.571, f"{_TZENG} (source only)"),
    ("usps->mnist", "dann_lenet"): (0.730, f"{_TZENG} (gradient reversal)"),
    ("usps->mnist", "adda_confusion"): (0.665, f"{_TZENG} (domain confusion)"),
    ("usps->mnist", "adda_gan"): (0.901, f"{_TZENG} (ADDA)"),
    ("blobs", "source_only"): (0.5, "the toy's construction: about .5 (the shift crosses the boundary)"),
    ("blobs", "dann"): (0.95, "an expectation, not a published number: the blobs toy's source text (a tutorial), "
                              "about .95"),
}


def published(experiment: str, method: str) -> tuple[float, str] | None:
    return PUBLISHED.get((experiment, method))


def published_text(experiment: str, method: str, digits: int | None = 4) -> str:
    """A published number as a table cell (``—`` where there is none); ``digits`` None: every digit it has, at
    least 3 (the papers' tables print 3 or 4)."""
    p = published(experiment, method)
    if p is None:
        return "—"
    digits = digits if digits is not None else next((d for d in range(3, 10) if round(p[0], d) == p[0]), 9)
    return f"{p[0]:.{digits}f}".lstrip("0") + (" (?)" if "(?)" in p[1] else "")


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN/inf: keep them visible as strings
    if callable(getattr(value, "item", None)):
        with contextlib.suppress(ValueError, RuntimeError):  # a numpy/torch scalar; an array of several is kept
            return _clean(value.item())
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return [_clean(v) for v in value] if isinstance(value, (list, tuple)) else value


def dumps(obj) -> str:
    """Canonical JSON (sorted keys, NaN/inf as strings)."""
    return json.dumps(_clean(obj), sort_keys=True)


def write_records(results_dir, notebook: str, profile: str, records: Iterable[dict]) -> Path:
    """Write ``records`` (each with :data:`REQUIRED_KEYS`) to ``results_dir/profile/notebook.jsonl``, atomically."""
    records = [dict(r) for r in records]
    for i, missing in enumerate([k for k in REQUIRED_KEYS if k not in r] for r in records):
        if missing:
            raise ValueError(f"record {i} lacks {missing}; every record needs {list(REQUIRED_KEYS)}")
    with atomic_write(path := Path(results_dir) / profile / f"{notebook}.jsonl") as fh:
        fh.writelines(dumps(r) + "\n" for r in records)
    return path


def read_records(path_or_dir, notebook: str | None = None, profile: str | None = None) -> list[dict]:
    """Read records from one ``.jsonl`` file, or ``dir/profile/notebook.jsonl``."""
    path = Path(path_or_dir) if notebook is None else Path(path_or_dir) / profile / f"{notebook}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no records at {path}; run the notebook (python -m dann_study regenerate) first")
    records = []
    for i, line in enumerate(path.read_text().split("\n"), 1):
        try:
            records += [json.loads(line)] if line.strip() else []
        except ValueError as exc:
            raise ValueError(f"{path}, line {i}: not a JSON record ({exc}); rerun the notebook that writes it "
                             "(python -m dann_study regenerate --only NN) or restore the file") from None
        if records and not isinstance(records[-1], dict):
            raise ValueError(f"{path}, line {i}: a JSON {type(records[-1]).__name__}, not a record (an object)")
    return records


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for fewer than two values)."""
    n = len(values)
    m = sum(values) / n if n else float("nan")
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")


def metric_value(record: dict, metric: str) -> float | None:
    """``record[metric]`` as a float; None where the record has no such metric; NaN where it is not a finite number
    (saved records keep NaN and inf as text, see :func:`dumps`): such a run counts as failed wherever it is read."""
    if (v := record.get(metric)) is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def usable(record: dict, metric: str) -> bool:
    """The run finished "ok" and its ``metric`` is a finite number: the one filter of tables, curves and pairs."""
    v = metric_value(record, metric)
    return record.get("status", "ok") == "ok" and v is not None and math.isfinite(v)


def aggregate(records: Iterable[dict], metric: str, by: Sequence[str] = ("method",)) -> list[dict]:
    """Per group of ``by`` (first-seen order): the keys, ``mean``, ``std``, ``n``, ``values`` and ``seeds`` of
    ``metric`` over the :func:`usable` runs (:func:`mean_std`), and ``failed``: runs not "ok", or "ok" with a
    non-finite ``metric`` (the same whether the records are in memory or read back from a file)."""
    groups: dict[tuple, dict] = {}
    for r in records:
        key = tuple(r.get(k) for k in by)
        g = groups.setdefault(key, {**dict(zip(by, key)), "values": [], "seeds": [], "failed": 0})
        if usable(r, metric):
            g["values"].append(metric_value(r, metric))
            g["seeds"].append(r.get("seed"))
        elif r.get("status", "ok") != "ok" or metric_value(r, metric) is not None:
            g["failed"] += 1
    for g in groups.values():
        g["mean"], g["std"], g["n"] = *mean_std(g["values"]), len(g["values"])
    return list(groups.values())


def runs_of(records: Iterable[dict], by: str = "seed") -> list[list[dict]]:
    """Pooled histories (:func:`dann_study.plan.histories`) split into one list per run (``by``)."""
    runs: dict = {}
    for r in records:
        runs.setdefault(r.get(by), []).append(r)
    return list(runs.values())


def ok_histories(histories: Iterable[dict]) -> list[dict]:
    """Pooled histories (:func:`dann_study.plan.histories`) less the runs whose last record's status is not "ok"."""
    return [r for run in runs_of(histories) if run and run[-1].get("status", "ok") == "ok" for r in run]


def mean_curve(histories: Sequence[list[dict]], key: str, *, x: str = "step", statuses: Sequence[str] | None = None,
               complete: bool = False) -> dict:
    """The curves' aggregator: :func:`mean_std` of ``key`` at each ``x`` (ascending) over the histories
    whose status (``statuses``; None: each one's last ``status``) is "ok"; ``complete``: only the x every
    such run logged. ``{"x", "mean", "std", "count": lists, "n": ok runs with the key, "failed"}``."""
    histories = [list(h) for h in histories]
    statuses = [h[-1].get("status", "ok") if h else "ok" for h in histories] if statuses is None else statuses
    ok = [h for h, status in zip(histories, statuses) if status == "ok"]
    n = sum(any(key in rec for rec in h) for h in ok)
    points = [{"x": r[x], "v": r[key]} for h in ok for r in h if r.get(x) is not None and r.get(key) is not None
              and not (isinstance(r[key], float) and math.isnan(r[key]))]
    at = [g for g in sorted(aggregate(points, "v", ("x",)), key=lambda g: g["x"]) if not complete or g["n"] == n]
    return {"x": [g["x"] for g in at], "mean": [g["mean"] for g in at], "std": [g["std"] for g in at],
            "count": [g["n"] for g in at], "n": n, "failed": len(histories) - len(ok)}


def format_cell(mean: float, std: float, n: int, digits: int = 3) -> str:
    """``"0.745 ± 0.012 (5)"``; one seed: ``"0.745 (1 seed: no spread)"``; none: ``"—"``."""
    if n == 0:
        return "—"
    spread = "(1 seed: no spread)" if n == 1 else f"± {std:.{digits}f} ({n})"
    return f"{mean:.{digits}f} {spread}"


def summary_table(records: list[dict], metric: str, by=("method",), columns: str | None = None,
                  digits: int = 4, experiment: str | None = None):
    """:func:`aggregate` cells "mean ± std (n)" by ``by`` (pivoted on ``columns``), a ``failed`` column
    where a run failed, and with ``experiment`` a ``published`` one."""
    import pandas as pd
    keys = list(by) + ([columns] if columns else [])
    if not records:
        raise ValueError(f"summary_table: no records to tabulate ({metric} by {', '.join(keys)}): every run "
                         "failed or none was fetched; see the errors printed where the runs were fetched")
    df = pd.DataFrame([{**{k: g[k] for k in keys}, metric: format_cell(g["mean"], g["std"], g["n"], digits),
                        "failed": g["failed"]} for g in aggregate(records, metric, keys)])
    table = df.pivot(index=list(by), columns=columns, values=metric) if columns else df.set_index(list(by))[[metric]]
    failed = df.groupby(list(by), sort=False)["failed"].sum() if columns else df.set_index(list(by))["failed"]
    if failed.sum():
        table = table.join(failed.rename("failed"))
    if experiment is not None and list(by) == ["method"]:
        table["published"] = [published_text(experiment, m) for m in table.index]
    return table


def paired_differences(records: list[dict], metric: str, baseline: str, by: str = "method",
                       group: str | None = None) -> list[dict]:
    """Per (``group``, variant): ``mean``, ``std``, ``n``, ``diffs`` and ``seeds`` of
    ``metric(variant) - metric(baseline)`` over the seeds both ran with a :func:`usable` value (as
    :func:`dannlib.stats.paired`; two records of one seed are an error)."""
    out = []
    for g in list(dict.fromkeys(r.get(group) for r in records)) if group else [None]:
        rs = [r for r in records if group is None or r.get(group) == g]
        base = seed_values(rs, metric, {by: baseline})
        for variant in dict.fromkeys(r.get(by) for r in rs if r.get(by) != baseline):
            values = seed_values(rs, metric, {by: variant})
            seeds = [s for s in values if s in base]
            diffs = [values[s] - base[s] for s in seeds]
            m, sd = mean_std(diffs)
            out.append({"group": g, by: variant, "mean": m, "std": sd, "n": len(diffs), "diffs": diffs, "seeds": seeds})
    return out


def seed_values(records: Iterable[dict], metric: str, match: Mapping) -> dict:
    """seed -> ``metric`` of the :func:`usable` records matching ``match`` (one per seed: ValueError for two)."""
    out = {}
    for r in records:
        if usable(r, metric) and all(r.get(k) == v for k, v in match.items()):
            if r.get("seed") in out:
                raise ValueError(f"two records for seed {r.get('seed')} match {dict(match)}: narrow `where` (e.g. add "
                                 "the pair) so that each seed has one value")
            out[r.get("seed")] = metric_value(r, metric)
    return out


def markdown_table(header: list[str], rows) -> str:
    """A Markdown table: ``header`` and one row of cells per item of ``rows`` (cells as ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])
