"""The study's results as Markdown, built only from the records the notebooks wrote.

``python -m dannlib report [--profile quick] [--results-dir results]`` prints one table per
notebook (mean ± std over seeds, the number of seeds in brackets, failed runs counted apart)
beside the published numbers of REFERENCE.md, with the profile, the seeds, the machine and
the regeneration times. The README's results section is pasted from its output, so every
number there can be traced to a record.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .profiles import check_profile
from .records import read_records

# Published target accuracies, typed in from REFERENCE.md ("(?)": quoted second-hand there).
PUBLISHED = {
    "03": {  # DANN paper, table 2, MNIST -> MNIST-M
        "source_only": ".5225", "dann": ".7666", "train_on_target": ".9596 (?)",
        "dann_improved": "— (reproductions with Adam/BN/dropout: .84-.91)",
    },
    "05": {  # ADDA paper, table 2, MNIST -> USPS (2,000 / 1,800 protocol)
        "source_only (LeNet)": ".752", "dann": ".771 (?)", "adda_confusion": ".791 (?)",
        "adda_gan": ".894", "adda_minimax": "—", "train_on_target (oracle)": "—",
    },
    "01": {  # seed 003 (REFERENCE §2), blobs only
        ("blobs", "source_only"): "about .5", ("blobs", "dann"): "about .95",
    },
}


def _cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "—"
    m = sum(values) / len(values)
    if len(values) == 1:
        return f"{m:.{digits}f} (1 seed: no spread)"
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return f"{m:.{digits}f} ± {s:.{digits}f} ({len(values)})"


def _group(records: list[dict], keys: tuple[str, ...], metric: str) -> dict:
    """{key tuple: ([ok values], n_failed)} in first-seen order."""
    out: dict = {}
    for r in records:
        key = tuple(r.get(k) for k in keys)
        vals, failed = out.setdefault(key, ([], [0]))
        if r.get("status", "ok") != "ok":
            failed[0] += 1
        elif r.get(metric) is not None:
            vals.append(float(r[metric]))
    return {k: (v, f[0]) for k, (v, f) in out.items()}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _seeds(records: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in records if r.get("seed") is not None})
    return ", ".join(map(str, seeds)) or "—"


def _metric_table(records, keys, metric, published=None, failed_col=True, digits=3) -> str:
    groups = _group(records, keys, metric)
    header = list(keys) + [f"{metric}, mean ± std (n seeds)"]
    if failed_col:
        header.append("failed")
    if published is not None:
        header.append("published")
    rows = []
    for key, (vals, failed) in groups.items():
        row = [*key, _cell(vals, digits)]
        if failed_col:
            row.append(failed)
        if published is not None:
            row.append(published.get(key if len(key) > 1 else key[0], "—"))
        rows.append(row)
    return _table(header, rows)


def markdown_report(results_dir="results", profile: str = "quick") -> str:
    """The Markdown report of every notebook's records under ``results_dir/profile``.

    ``results_dir`` may also be a list of folders (runs of the same profile made apart, e.g.
    different seeds): their records are pooled, and each table names the files it read."""
    check_profile(profile)
    dirs = [results_dir] if isinstance(results_dir, (str, Path)) else list(results_dir)
    folders = [Path(d) / profile for d in dirs]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing or not folders:
        raise FileNotFoundError(f"no records in {', '.join(missing) or 'no folder given'}: run "
                                f"`make figures PROFILE={profile}` (or `python -m dannlib regenerate "
                                f"--profile {profile}`) first")
    parts = [f"Profile `{profile}`; records in " + ", ".join(f"`{f}`" for f in folders) + "."]
    regen = folders[0] / "regeneration.json"
    if regen.is_file():
        info = json.loads(regen.read_text())
        runs = info.get("notebooks", {})
        rows = [[name, r.get("status"), f"{r.get('seconds', float('nan')):.0f}",
                 f"{r.get('peak_rss_mib') or float('nan'):.0f}", r.get("run", "")]
                for name, r in sorted(runs.items())]
        total = sum(r.get("seconds") or 0 for r in runs.values())
        machine = next(iter(info.get("runs", {}).values()), {}).get("machine", {})
        parts.append(f"Machine: {machine.get('host', '?')}, {machine.get('device', '?')} "
                     f"({machine.get('device_name', '?')}), {machine.get('cpu_count', '?')} CPUs, "
                     f"torch {machine.get('torch', '?')}. Regeneration: {total / 60:.1f} min in all.")
        parts.append(_table(["notebook", "status", "seconds", "peak memory (MiB)", "run started"], rows))

    def section(nb: str, title: str, body) -> None:
        paths = [p for f in folders for p in sorted(f.glob(f"{nb}_*.jsonl"))]
        if not paths:
            parts.append(f"### {title}\n\n(no records: notebook {nb} has not run under `{profile}`)")
            return
        recs = [r for p in paths for r in read_records(p)]
        steps = sorted({r["steps"] for r in recs if r.get("steps")})
        names = ", ".join(f"`{p.name}`" if len(folders) == 1 else f"`{p.parent.parent.name}/{p.name}`" for p in paths)
        parts.append(f"### {title}\n\n{names}; seeds {_seeds(recs)}; steps {steps or '—'}.\n\n" + body(recs))

    section("01", "Toy problems (notebook 01): target accuracy",
            lambda rs: _metric_table(rs, ("toy", "method"), "target_acc", PUBLISHED["01"]))
    section("03", "MNIST → MNIST-M (notebook 03): target test accuracy",
            lambda rs: _metric_table(rs, ("method",), "target_test_acc", PUBLISHED["03"], digits=4)
            + "\n\n" + _metric_table(rs, ("method",), "source_test_acc", failed_col=False, digits=4))
    section("04", "Proxy A-distance of the features (notebook 04; 2 = fully separable domains)",
            lambda rs: _metric_table(rs, ("method",), "pad", failed_col=False))
    section("05", "ADDA comparison (notebook 05): target test accuracy",
            lambda rs: _metric_table(rs, ("pair", "method"), "target_test_acc",
                                     {("MNIST->USPS (2000/1800)", k): v for k, v in PUBLISHED["05"].items()}))
    section("06", "IIMT ablation (notebook 06): target test accuracy",
            lambda rs: _metric_table(rs, ("pair", "method"), "target_test_acc"))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dannlib report", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="smoke | quick | paper (default: quick)")
    parser.add_argument("--results-dir", action="append",
                        help="where the notebooks wrote their records (default: results); repeat it "
                             "to pool the records of several folders")
    args = parser.parse_args(argv)
    try:
        print(markdown_report(args.results_dir or ["results"], args.profile), end="")
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"dannlib report: {exc}\n")
    return 0
