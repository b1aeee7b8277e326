"""``python -m benchmarks.estimate_vs_records``: the sweep's estimate of the paper profile against the run store's
records (issue 22: "the paper profile's total run time, from the records ... the sweep estimate within 20% of it").

Every distinct run the paper profile's notebooks need (their dependencies included, each counted once) is priced by
:func:`dannlib.store.run_cost_seconds` as on the study's reference CPU (``$DANNLIB_SPEED`` = 1, no probe), and set
beside its stored record's ``seconds`` (the training loop's one-thread time on the VM that trained it: several VMs
of one kind, whose speeds differ). Per method and in total; writes ``benchmarks/estimate-vs-records.json``."""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

from dann_study.plan import needed_runs
from dannlib.results import markdown_table
from dannlib.store import Store, run_cost_seconds
from dannlib.utils import atomic_write


def compare(store: Store, profile: str = "paper") -> dict:
    """``{"methods": {method: {"runs", "estimate_s", "records_s"}}, "missing": n, totals}`` over the profile's runs."""
    missing, rows = 0, defaultdict(lambda: {"runs": 0, "estimate_s": 0.0, "records_s": 0.0})
    for run in needed_runs(profile):
        if (stored := store.get(run)) is None:
            missing += 1
            continue
        row = rows[run.method]
        row["runs"] += 1
        row["estimate_s"] += run_cost_seconds(run)
        row["records_s"] += stored.seconds
    est, rec = (sum(r[k] for r in rows.values()) for k in ("estimate_s", "records_s"))
    return {"profile": profile, "methods": dict(rows), "missing": missing,
            "runs": sum(r["runs"] for r in rows.values()), "estimate_s": est, "records_s": rec,
            "records_over_estimate": rec / est if est else float("nan")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.estimate_vs_records", description=__doc__.splitlines()[0])
    p.add_argument("--store", help="the run store (default: $DANNLIB_STORE, else results/runs)")
    p.add_argument("--out", default=str(Path(__file__).parent / "estimate-vs-records.json"))
    args = p.parse_args(argv)
    os.environ["DANNLIB_SPEED"] = "1"  # price every run as on the reference CPU, whatever this machine is
    out = compare(Store(args.store))
    with atomic_write(args.out) as fh:
        json.dump(out, fh, indent=1, sort_keys=True)
    rows = [[m, r["runs"], f"{r['estimate_s'] / 3600:.2f}", f"{r['records_s'] / 3600:.2f}",
             f"{r['records_s'] / r['estimate_s']:.2f}"]
            for m, r in sorted(out["methods"].items(), key=lambda kv: -kv[1]["records_s"])]
    rows.append(["**all**", out["runs"], f"{out['estimate_s'] / 3600:.2f}", f"{out['records_s'] / 3600:.2f}",
                 f"{out['records_over_estimate']:.2f}"])
    print(markdown_table(["method", "runs", "estimate (h, one thread)", "records (h, one thread)",
                          "records / estimate"], rows))
    print(f"\n{out['missing']} run(s) of the profile not in the store; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
