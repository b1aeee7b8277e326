"""The study's results as Markdown, built only from the records the notebooks wrote.

``python -m dannlib report [--profile paper] [--results-dir DIR]`` prints one table per
notebook (mean ± std over seeds, the number of seeds in brackets, failed runs counted apart)
beside the published numbers of :data:`dannlib.results.PUBLISHED`, with the profile, the
seeds, the machine and the regeneration times. The README's results section is pasted from
its output, so every number there can be traced to a record. The results folder defaults to
the project's ``results/`` wherever the command is run from.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .profiles import check_profile
from .results import aggregate, format_cell, published_text, read_records
from .utils import results_root

EXPERIMENT_OF_PAIR = {"MNIST->MNIST-M": "mnist->mnist_m", "MNIST->USPS": "mnist->usps", "USPS->MNIST": "usps->mnist"}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metric_table(records, keys, metric, *, digits=3, published: bool = True) -> str:
    """One Markdown row per group of ``keys``: the :func:`aggregate` cell, failed runs and,
    where the records carry a ``pair`` or ``toy``, the published number."""
    rows, header = [], list(keys) + [f"{metric}, mean ± std (n seeds)", "failed"]
    if published:
        header.append("published")
    for g in aggregate(records, metric, keys):
        row = [*(g[k] for k in keys), format_cell(g["mean"], g["std"], g["n"], digits), g["failed"]]
        if published:
            pair = g.get("pair")
            exp = EXPERIMENT_OF_PAIR.get(pair) if pair is not None else (g.get("toy") or "mnist->mnist_m")
            row.append(published_text(exp, g.get("method"), digits))
        rows.append(row)
    return _table(header, rows)


SECTIONS = [  # (notebook number, title, keys, metric)
    ("01", "Toy problems (notebook 01): target accuracy", ("toy", "method"), "target_acc"),
    ("03", "MNIST → MNIST-M (notebook 03): target test accuracy", ("method",), "target_test_acc"),
    ("04", "Proxy A-distance of the features (notebook 04; 2 = fully separable domains)", ("method",), "pad"),
    ("05", "ADDA comparison (notebook 05): target test accuracy", ("pair", "method"), "target_test_acc"),
    ("06", "IIMT (notebook 06): target test accuracy", ("pair", "method"), "target_test_acc"),
]


def markdown_report(results_dir=None, profile: str = "quick") -> str:
    """The Markdown report of every notebook's records under ``results_dir/profile``
    (default: the project's results folder)."""
    check_profile(profile)
    folder = results_root(results_dir) / profile
    if not folder.is_dir():
        raise FileNotFoundError(f"no records in {folder}: run `make figures PROFILE={profile}` "
                                f"(python -m dannlib sweep --profile {profile}, then regenerate) first")
    parts = [f"Profile `{profile}`; records in `results/{profile}/`."]
    regen = folder / "regeneration.json"
    if regen.is_file():
        info = json.loads(regen.read_text())
        runs = info.get("notebooks", {})
        log = info.get("runs", {})

        def status(r):  # a render of the runs stored so far (regenerate --partial) says so
            partial = (log.get(r.get("run")) or {}).get("parameters", {}).get("train_missing") == "stored"
            return f"{r.get('status')}, partial: only the runs stored then" if partial else r.get("status")

        rows = [[name, status(r), f"{r.get('seconds') or float('nan'):.0f}",
                 f"{r.get('peak_rss_mib') or float('nan'):.0f}"] for name, r in sorted(runs.items())]
        machine = next(iter(info.get("runs", {}).values()), {}).get("machine", {}) or info.get("machine", {})
        scratch = info.get("from_scratch") or {}
        wall = scratch.get("wall_seconds")
        sweep = scratch.get("sweep") or {}
        parts.append(f"Machine: {machine.get('host', '?')}, {machine.get('device', '?')} "
                     f"({machine.get('device_name', '?')}), {machine.get('cpu_count', '?')} CPUs, torch "
                     f"{machine.get('torch', '?')}."
                     + (f" From an empty run store, `make figures PROFILE={profile}` took {wall / 60:.1f} min of wall "
                        f"time (`wall_seconds` {wall:.0f}; started {scratch.get('started_at', '?')}; its sweep trained "
                        f"{sweep.get('trained', '?')} runs in {sweep.get('seconds', float('nan')) / 60:.1f} min)."
                        if wall else ""))
        parts.append(_table(["notebook", "status", "seconds", "peak memory (MiB)"], rows))
    for number, title, keys, metric in SECTIONS:
        paths = sorted(folder.glob(f"{number}_*.jsonl"))
        if not paths:
            parts.append(f"### {title}\n\n(no records: notebook {number} has not run under `{profile}`)")
            continue
        recs = [r for p in paths for r in read_records(p)]
        seeds = sorted({r["seed"] for r in recs if r.get("seed") is not None})
        steps = sorted({r["steps"] for r in recs if r.get("steps")})
        body = metric_table(recs, keys, metric, digits=4 if number == "03" else 3, published=metric != "pad")
        parts.append(f"### {title}\n\n`{paths[0].name}`; seeds {', '.join(map(str, seeds))}; "
                     f"steps {', '.join(map(str, steps)) or '—'}.\n\n{body}")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dannlib report", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="smoke | quick | paper (default: quick)")
    parser.add_argument("--results-dir", default=None,
                        help="where the notebooks wrote their records (default: $DANNLIB_RESULTS, else the "
                             "project's results/)")
    args = parser.parse_args(argv)
    try:
        print(markdown_report(args.results_dir, args.profile), end="")
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"dannlib report: {exc}\n")
    return 0
