"""The study's results as Markdown, built only from the records the notebooks wrote
(``python -m dann_study report``: the headline against :data:`dannlib.results.PUBLISHED`, one table
per notebook with its paired comparisons, the machine and the regeneration times; the README's
tables are copied from it), and the tables the notebooks print with the same builders.
"""
from __future__ import annotations

import json
from pathlib import Path

from dannlib.results import (aggregate, format_cell, markdown_table, ok_histories, published, published_text,
                             read_records)
from dannlib.stats import compare_records, format_interval, t_half_width
from dannlib.utils import results_root

from .profiles import check_profile

#: A pair (as records name it) -> its experiment in :data:`dannlib.results.PUBLISHED`. The papers measured
#: MNIST-M on the released set, so both of our MNIST-M pairs compare with the same published rows.
EXPERIMENT_OF_PAIR = {"MNIST->MNIST-M": "mnist->mnist_m", "MNIST->MNIST-M (released)": "mnist->mnist_m",
                      "MNIST->USPS": "mnist->usps", "USPS->MNIST": "usps->mnist"}
SECTIONS = [  # (notebook number, title, keys, metric)
    ("01", "Toy problems (notebook 01): target accuracy", ("toy", "method"), "target_acc"),
    ("03", "MNIST → MNIST-M (notebook 03): target test accuracy", ("pair", "method"), "target_test_acc"),
    ("04", "Proxy A-distance of the features (notebook 04; 2 = fully separable domains)", ("method",), "pad"),
    ("05", "ADDA comparison (notebook 05): target test accuracy", ("pair", "method"), "target_test_acc"),
    ("06", "IIMT (notebook 06): target test accuracy", ("pair", "method"), "target_test_acc"),
    ("09", "DANN speedrun on the released MNIST-M (notebook 09): target test accuracy",
     ("cell", "method", "network", "precision", "optimizer"), "target_test_acc"),
]
#: The headline: (notebook, title, metric, group) of the tables of ours against the published numbers.
HEADLINE = [("03", "MNIST → MNIST-M, target test accuracy (notebook 03; DANN paper, table 2)", "target_test_acc",
             "pair"),
            ("05", "MNIST ↔ USPS, target test accuracy (notebook 05; ADDA paper, table 2)", "target_test_acc", "pair")]


def _records(folder, number) -> tuple[list[Path], list[dict]]:
    paths = sorted(Path(folder).glob(f"{number}_*.jsonl"))
    return paths, [r for p in paths for r in read_records(p)]


def metric_table(records, keys, metric, *, digits=3, published: bool = True) -> str:
    """One Markdown row per group of ``keys``: the :func:`aggregate` cell, failed runs and,
    where the records carry a ``pair`` or ``toy``, the published number."""
    rows = []
    for g in aggregate(records, metric, keys):
        exp = EXPERIMENT_OF_PAIR.get(g["pair"]) if g.get("pair") is not None else (g.get("toy") or "mnist->mnist_m")
        rows.append([*(g[k] for k in keys), format_cell(g["mean"], g["std"], g["n"], digits), g["failed"]]
                    + [published_text(exp, g.get("method"), digits)] * published)
    return markdown_table([*keys, f"{metric}, mean ± std (n seeds)", "failed"] + ["published"] * published, rows)


def _regeneration(info: dict, profile: str) -> list[str]:
    """The machine line and the table of notebook run times of ``regeneration.json``."""
    log = info.get("runs", {})

    def status(r):  # a render of the runs stored so far (regenerate --partial) says so
        partial = (log.get(r.get("run")) or {}).get("parameters", {}).get("train_missing") == "stored"
        return f"{r.get('status')}, partial: only the runs stored then" if partial else r.get("status")

    rows = [[name, status(r), f"{r.get('seconds') or float('nan'):.0f}", f"{r.get('peak_rss_mib') or float('nan'):.0f}"]
            for name, r in sorted(info.get("notebooks", {}).items())]
    # each machine that executed the outputs in place: its record (one with the CPU model, which older records lack,
    # where any has it) and its notebooks
    machines: dict[tuple, dict] = {}
    notebooks: dict[tuple, list[str]] = {}
    for nb, r in sorted(info.get("notebooks", {}).items()):
        m = (log.get((r.get("last_ok") or r).get("run")) or {}).get("machine") or {}
        key = tuple(m.get(k) for k in ("host", "platform", "device", "cpu_count", "torch"))
        if key not in machines or (m.get("cpu_model") and not machines[key].get("cpu_model")):
            machines[key] = m
        notebooks.setdefault(key, []).append(nb[:2])

    def describe(m: dict) -> str:
        if not m:
            return "unknown machine (not recorded)"
        name = (m.get("device", "cpu") == "cpu" and m.get("cpu_model")) or m.get("device_name", "?")
        platform = f", {m['platform']}" if m.get("platform") else ""
        return (f"{m.get('host', '?')}, {m.get('device', '?')} ({name}{platform}), {m.get('cpu_count', '?')} CPUs, "
                f"torch {m.get('torch', '?')}")
    scratch = info.get("from_scratch") or {}
    wall, sweep = scratch.get("wall_seconds"), scratch.get("sweep") or {}
    line = ("Machine: " + describe(next(iter(machines.values()), {})) + "." if len(machines) <= 1 else
            "Machines (by the notebooks whose outputs each executed): " + "; ".join(
                f"{describe(machines[k])} (notebook{'s' * (len(nbs) > 1)} {', '.join(nbs)})"
                for k, nbs in notebooks.items()) + ".")
    if wall:
        line += (f" From an empty run store, `make figures PROFILE={profile}` took {wall / 60:.1f} min of wall "
                 f"time (`wall_seconds` {wall:.0f}; started {scratch.get('started_at', '?')}; its sweep trained "
                 f"{sweep.get('trained', '?')} runs in {sweep.get('seconds', float('nan')) / 60:.1f} min).")
    return [line, markdown_table(["notebook", "status", "seconds", "peak memory (MiB)"], rows)]


def markdown_report(results_dir=None, profile: str = "quick") -> str:
    """The Markdown report of every notebook's records under ``results_dir/profile``
    (default: the project's results folder)."""
    check_profile(profile)
    folder = results_root(results_dir) / profile
    if not folder.is_dir():
        raise FileNotFoundError(f"no records in {folder}: run `make figures PROFILE={profile}` "
                                f"(python -m dann_study sweep --profile {profile}, then regenerate) first")
    parts = [f"Profile `{profile}`; records in `results/{profile}/`."]
    headline = [f"#### {title}\n\n" + published_table(found[1], metric, group=group)
                for number, title, metric, group in HEADLINE if (found := _records(folder, number))[0]]
    if headline:
        parts.append("### Headline: ours against the published numbers\n\n" + "\n\n".join(headline))
    if (path := folder / "regeneration.json").is_file():
        try:
            info = json.loads(path.read_text())
        except ValueError as exc:
            info = exc
        if not isinstance(info, dict):
            why = f"not JSON: {info}" if isinstance(info, ValueError) else f"a JSON {type(info).__name__}"
            raise ValueError(f"{path} is not a regeneration report ({why}): rerun `make figures PROFILE={profile}`, "
                             "or remove the file")
        parts += _regeneration(info, profile)
    for number, title, keys, metric in SECTIONS:
        paths, recs = _records(folder, number)
        if not paths:
            parts.append(f"### {title}\n\n(no records: notebook {number} has not run under `{profile}`)")
            continue
        seeds = sorted({r["seed"] for r in recs if r.get("seed") is not None})
        steps = sorted({r["steps"] for r in recs if r.get("steps")})
        body = metric_table(recs, keys, metric, digits=4 if number == "03" else 3, published=metric != "pad")
        parts.append(f"### {title}\n\n`{paths[0].name}`; seeds {', '.join(map(str, seeds))}; "
                     f"steps {', '.join(map(str, steps)) or '—'}.\n\n{body}")
        parts += [f"Paired comparisons (`{name}`):\n\n" + notebook_comparisons(recs, name)
                  for name in COMPARISONS if COMPARISONS[name][0] == number]
    paths, recs = _records(folder, "07")
    if paths:
        from .grids import GRID_SETTING
        from .plan import plan
        from .selection_report import selection_markdown
        recs = [r for r in recs if r.get("scores_from") != "missing"]
        parts.append("### Label-free model selection (notebook 07): regret of the trusted rule (oracle's best target "
                     f"accuracy − the pick's)\n\n`{paths[0].name}`; seeds "
                     f"{', '.join(map(str, sorted({r['seed'] for r in recs})))}.\n\n"
                     + selection_markdown(recs, GRID_SETTING, plan("07", profile).settings["defaults"]))
    return "\n\n".join(parts) + "\n"


#: The paired comparisons each notebook reports, and the report prints: name -> (notebook,
#: grouping key or None, [(metric, a, b), ...]); "a − b" on the seeds both ran ok
#: (:mod:`dannlib.stats`). A comparison whose sides have no shared seed is left out.
COMPARISONS: dict[str, tuple[str, str | None, list[tuple[str, str, str]]]] = {
    "01": ("01", "toy", [("target_acc", "dann", "source_only"), ("target_acc", "dann_deep", "source_only"),
                         ("target_acc", "dann_deep", "dann"), ("domain_probe_acc", "dann", "source_only"),
                         ("domain_probe_acc", "dann_deep", "dann")]),
    "03": ("03", "pair", [("target_test_acc", "dann", "source_only"), ("target_test_acc", "dann_adam", "dann"),
                          ("target_test_acc", "cdan", "dann")]),
    "09": ("09", "pair", [("target_test_acc", "dann_speedrun", "dann"),
                          ("target_test_acc", "dann_digits_in_fp32", "dann"),
                          ("target_test_acc", "dann_digits_in_bf16", "dann_digits_in_fp32")]),
    "04": ("04", None, [("pad", "dann", "source_only"), ("pad", "source_only", "raw_pixels")]),
    "05": ("05", "pair", [("target_test_acc", m, "adda_pretrain")
                          for m in ("dann_lenet", "adda_gan", "adda_minimax", "adda_confusion")]
                         + [("target_test_acc", "dann_lenet", "adda_gan")]),
    "06": ("06", "pair", [("target_test_acc", "iimt", "dann"), ("target_test_acc", "iimt", "source_only"),
                          ("target_test_acc", "dann", "source_only")]),
    # the rows at the settings 07's label-free selection chose (dann_study.grids.SELECTED)
    "06-selected": ("06", "pair", [("target_test_acc", "iimt_selected", "dann_selected"),
                                   ("target_test_acc", "iimt_selected", "dann"),
                                   ("target_test_acc", "iimt_selected", "iimt"),
                                   ("target_test_acc", "dann_selected", "dann"),
                                   ("target_test_acc", "iimt_selected", "source_only")]),
    "05-selected": ("05", "pair", [("target_test_acc", "adda_gan_selected", "adda_gan"),
                                   ("target_test_acc", "adda_gan_selected", "adda_pretrain"),
                                   ("target_test_acc", "dann_lenet", "adda_gan_selected")]),
    "06-ablation": ("06", "pair", [("target_test_acc", v, "iimt") for v in
                                   ("iimt_no_inter", "iimt_no_target_mix", "iimt_no_consistency", "iimt_no_intra",
                                    "iimt_no_adversarial")]),
}
COMPARISON_HEADER = ["comparison", "n", "mean diff", "95% CI", "sign-test p", "verdict"]


def comparisons(records, name: str) -> list[tuple]:
    """The paired comparisons ``COMPARISONS[name]`` on ``records``: ``(group, metric,
    Comparison)`` for every group (e.g. each pair) and comparison with at least one shared seed."""
    if name not in COMPARISONS:
        raise ValueError(f"name must be one of {sorted(COMPARISONS)}, got {name!r}")
    _, group, specs = COMPARISONS[name]
    records, out = list(records), []
    for g in (list(dict.fromkeys(r.get(group) for r in records)) if group else [None]):
        for metric, a, b in specs:
            c = compare_records(records, metric, a, b, where={group: g} if group else {})
            out += [(g, metric, c)] if c.n else []
    return out


def comparison_table(rows, *, group: str | None = None, digits: int = 3) -> str:
    """A Markdown table of ``(group, metric, Comparison)`` rows (as :func:`comparisons` gives):
    [group |] [metric |] comparison | n | mean diff | 95% CI | sign-test p | verdict; the metric
    column only when the rows have more than one metric."""
    rows = list(rows)
    if not rows:
        return "(no comparison: no two methods share a seed in these records)"
    many = len({m for _, m, _ in rows}) > 1
    header = [group] * bool(group) + ["metric"] * many + COMPARISON_HEADER
    body = [[g] * bool(group) + [metric] * many + [c.as_row(digits)[k] for k in COMPARISON_HEADER]
            for g, metric, c in rows]
    return markdown_table(header, body)


def notebook_comparisons(records, name: str, *, digits: int = 3) -> str:
    """:func:`comparison_table` of :func:`comparisons` ``(records, name)``, with a one-line key."""
    return (comparison_table(comparisons(records, name), group=COMPARISONS[name][1], digits=digits)
            + "\n\nPaired by seed (`dannlib.stats`): a − b on the seeds both ran ok; 95% paired t-interval; exact "
              "two-sided sign test; *higher*/*lower* only when the interval excludes 0.")


def selected_table(records, metric: str = "target_test_acc"):
    """05's and 06's rows at the settings chosen without target labels (methods ending in
    ``_selected``, tagged ``chosen``) beside their untuned rows: a pandas DataFrame indexed by
    pair and method; None when no record is a selected row."""
    import pandas as pd
    cells = {(g["pair"], g["method"]): format_cell(g["mean"], g["std"], g["n"])
             for g in aggregate(records, metric, ("pair", "method"))}
    chosen = {(r["pair"], r["method"]): r.get("chosen", "—") for r in records if r["method"].endswith("_selected")}
    if not chosen:
        return None
    rows = [{"pair": pair, "method": method.removesuffix("_selected"), "setting (selected row)": text,
             f"{metric}, selected": cells.get((pair, method), "—"),
             f"{metric}, untuned": cells.get((pair, method.removesuffix("_selected")), "— (not trained)")}
            for (pair, method), text in chosen.items()]
    return pd.DataFrame(rows).set_index(["pair", "method"])


def head_to_head(records, a: str, b: str, metric: str = "target_test_acc") -> str:
    """Markdown bullets, one per pair where ``a`` and ``b`` share a seed: does ``a`` beat ``b``
    on ``metric`` ("higher"/"lower" only when the paired 95% interval excludes 0)."""
    records, lines = list(records), []
    for g in dict.fromkeys(r.get("pair") for r in records):
        c = compare_records(records, metric, a, b, where={"pair": g})
        if c.n:
            answer = {"higher": "yes", "lower": "no, lower"}.get(c.verdict, "not shown (no clear difference)")
            lines.append(f"- **{g}**: {a} beats {b}? {answer}: {a} − {b} = {c.mean:+.3f}, 95% CI "
                         f"{format_interval(c.ci_low, c.ci_high, 3)}, {c.n} seeds ({c.n_higher} higher, "
                         f"{c.n_lower} lower)")
    return "\n".join(lines) or f"(no seed shared by {a} and {b})"


def published_table(records, metric: str, *, group: str | None = None, experiment=None, digits: int = 3,
                    interval: bool = True) -> str:
    """Ours beside the published number (as published), for every (group, method) that has one: [group |]
    method | ours, mean ± sd (n) | published | ours − published [95% CI] | published in. The interval is the
    t-interval of our mean over seeds, less the published number (whose own spread is not counted); ``interval``
    False leaves it out (for expectations that are not measured numbers, e.g. 01's toys).
    ``experiment``: the experiment's name, or a mapping from the group's values to it (default
    :data:`EXPERIMENT_OF_PAIR`)."""
    body = []
    experiment = EXPERIMENT_OF_PAIR if experiment is None and group else experiment
    for g in aggregate(records, metric, [group, "method"] if group else ["method"]):
        exp = experiment.get(g.get(group)) if isinstance(experiment, dict) else experiment
        pub = published(exp, g["method"]) if exp else None
        if pub is not None and g["n"]:
            diff = g["mean"] - pub[0]
            half = t_half_width(g["std"], g["n"])
            gap = f"{diff:+.{digits}f}" + (f" {format_interval(diff - half, diff + half, digits)}"
                                           * (g["n"] > 1 and interval))
            body.append(([g[group]] if group else []) + [g["method"], format_cell(g["mean"], g["std"], g["n"], digits),
                        published_text(exp, g["method"], None),
                        gap,
                        pub[1].replace(" (?)", "")])
    if not body:
        return "(no published number for these records)"
    return markdown_table([group] * bool(group) + ["method", "ours, mean ± sd (n)", "published",
                                                   "ours − published [95% CI]", "published in"], body)


def threshold_counts(records, metric: str, threshold: float, *, by=("method",), columns: str | None = None,
                     below: bool = False):
    """How many ok seeds lie above (or ``below``) ``threshold``: a pandas DataFrame of "k of n"
    cells indexed by ``by`` (pivoted on ``columns``)."""
    import pandas as pd
    keys = list(by) + ([columns] if columns else [])
    rows = []
    for g in aggregate(records, metric, keys):
        k = sum((v < threshold) if below else (v > threshold) for v in g["values"])
        rows.append({**{key: g[key] for key in keys}, metric: f"{k} of {g['n']}"})
    df = pd.DataFrame(rows)
    return df.pivot(index=list(by), columns=columns, values=metric) if columns else df.set_index(list(by))[[metric]]


def last_logged(runs, keys) -> list[dict]:
    """One record per stored run ``(tags, run)``: its tags, seed, status and the last logged
    value of each of ``keys`` (None where the history lacks it), for :func:`aggregate`."""
    return [{**tags, "seed": run.spec.seed, "status": run.status,
             **{k: (run.history[-1] if run.history else {}).get(k) for k in keys}} for tags, run in runs]


def final_trend(histories: dict, key: str, *, fraction: float = 0.2):
    """Is a monitored curve still moving at the end? A pandas DataFrame, one row per method of
    ``histories`` (name -> history records of all its seeds; runs that did not finish ok left out): the mean over
    seeds of ``key`` at the last logged step, and its change over the last ``fraction`` of the logged points."""
    import pandas as pd
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    rows = {}
    for name, hist in histories.items():  # the runs that finished ok, as mean_curve and the tables take them
        df = pd.DataFrame(ok_histories(hist))
        if key not in df or df[key].isna().all():
            continue
        curve = df.groupby("step")[key].mean().dropna()
        k = max(1, int(len(curve) * fraction)) if len(curve) > 1 else 0
        rows[name] = {f"{key} at the last step": f"{curve.iloc[-1]:.3f}",
                      f"change over the last {curve.index[-1] - curve.index[-1 - k]:,} steps" if k else "change":
                          f"{curve.iloc[-1] - curve.iloc[-1 - k]:+.3f}" if k else "—"}
    return pd.DataFrame.from_dict(rows, orient="index")


def method_table(records, metrics, *, order=None, names: dict | None = None, experiment: str | None = None):
    """A pandas DataFrame, one row per method (in ``order``): each metric's :func:`aggregate`
    cell, the failed runs and, with ``experiment``, the published number and its source."""
    import pandas as pd
    names, records, rows = names or {}, list(records), {}
    for m in (list(order) if order is not None else list(dict.fromkeys(r["method"] for r in records))):
        rs = [r for r in records if r["method"] == m]
        if not rs:
            continue
        cells = [aggregate(rs, metric)[0] for metric in metrics]
        row = {metric: format_cell(g["mean"], g["std"], g["n"]) for metric, g in zip(metrics, cells)}
        row["failed"] = cells[-1]["failed"]
        if experiment is not None:
            pub = published(experiment, m)
            row.update({"published": published_text(experiment, m, 3), "published in": pub[1] if pub else "—"})
        rows[names.get(m, m)] = row
    return pd.DataFrame.from_dict(rows, orient="index")

