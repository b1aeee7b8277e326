"""The ``sweep`` command (``python -m dannlib sweep``): train every run that the selected
notebooks need under a profile (:func:`dannlib.sweep.ensure`), or ``--prune`` the store or
``--backfill-fingerprints``. It sits above :mod:`dannlib.plan` (which runs) and
:mod:`dannlib.sweep` (training them), so that the sweep need not import the plan, which
imports the sweep (:func:`dannlib.plan.fetch`).
"""
from __future__ import annotations

import argparse
import sys

from . import sweep
from .plan import NOTEBOOKS, parse_only, parse_seeds, plan_specs, selected_notebooks
from .settings import check_scheduler, check_time_limit, check_workers, check_writable, scheduler_setting
from .store import Store, estimate_seconds
from .utils import atomic_write, results_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .profiles import DEFAULT_PROFILE, PROFILES

    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES,
                        help=f"which profile's runs (default: {DEFAULT_PROFILE})")
    parser.add_argument("--only", help="only these notebooks, by number, e.g. 03,05")
    parser.add_argument("--seeds", help="override the profile's seeds, e.g. 0,1,2")
    parser.add_argument("--workers", type=int, default=None,
                        help="local worker processes, one torch thread each (default: $DANNLIB_WORKERS or one "
                             "per core); 1 trains in this process")
    parser.add_argument("--scheduler", default=None,
                        help="a Dask distributed scheduler, tcp://HOST:PORT (default: $DANNLIB_SCHEDULER; "
                             "unset: local processes). Start one with `dask scheduler` and `dask worker ADDR`; use only a "
                             "scheduler and workers you trust (tls:// on networks you do not control): docs/dask.md")
    parser.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                        help="start no new run after this many minutes (runs in flight finish)")
    parser.add_argument("--recompute", action="store_true", help="retrain even the runs found in the store")
    parser.add_argument("--data-root", default=None, help="the data root (default: $DANNLIB_DATA, else data/)")
    parser.add_argument("--store", default=None, help="the run store (default: $DANNLIB_STORE, else results/runs)")
    parser.add_argument("--dry-run", action="store_true", help="only list what is missing and the estimate")
    parser.add_argument("--backfill-fingerprints", action="store_true",
                        help="train nothing; give the stored runs recorded without a data fingerprint the "
                             "fingerprint of the data root's current files, each checked against its SHA256SUMS "
                             "(the data they were trained on); with --dry-run, only count them")
    parser.add_argument("--prune", action="store_true",
                        help="train nothing; remove the stored runs that no notebook needs under any profile "
                             "(e.g. left behind when a config change gave runs new keys); with --dry-run, "
                             "only list them")


def _prune(store: Store, dry_run: bool) -> int:
    from .profiles import PROFILES

    keep = set()
    for profile in PROFILES:
        for nb in NOTEBOOKS:
            for spec in plan_specs(nb, profile):
                keep.add(spec.key)
                keep.update(d.key for d in spec.dependencies())
    files = store.prune(keep, dry_run=dry_run)
    runs = sorted({f"{p.parent.name}/{p.stem}" for p in files})
    print(f"sweep --prune: {len(runs)} stored run(s) that no notebook needs under any profile "
          + ("(dry run: nothing removed)" if dry_run else f"removed ({len(files)} files)") + f"; store {store.root}")
    for r in runs:
        print(f"  {r}")
    return 0


def _backfill(store: Store, data_root, dry_run: bool) -> int:
    from .data.common import DataChecksumError, DataNotFoundError, data_root as resolve
    from .data.fingerprint import backfill_store

    try:
        out = backfill_store(store.root, data_root, dry_run=dry_run)
    except (DataChecksumError, DataNotFoundError) as exc:
        print(f"dannlib sweep --backfill-fingerprints: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"sweep --backfill-fingerprints: {len(out['added'])} record(s) "
          + ("would get" if dry_run else "got") + f" the data fingerprint of {resolve(data_root)}; "
          f"{out['had']} had one; {len(out['skipped'])} skipped; store {store.root}")
    for path, why in out["skipped"]:
        print(f"  skipped {path}: {why}")
    return 0


def run_from_args(args: argparse.Namespace) -> int:
    # Every option and setting is checked before anything is trained, removed or written.
    store = Store(args.store, data_root=args.data_root)
    try:
        only = parse_only(args.only)
        seeds = parse_seeds(args.seeds)
        notebooks = selected_notebooks(only)
        specs = sweep._unique(s for nb in notebooks for s in plan_specs(nb, args.profile, seeds))
        workers = check_workers(args.workers, setting="--workers")
        time_limit = check_time_limit(args.time_limit)
        scheduler, scheduler_from = scheduler_setting(args.scheduler)
        if not args.dry_run:
            check_writable(store.root, "--store or $DANNLIB_STORE")
            if not (args.prune or args.backfill_fingerprints):
                check_writable(results_root() / args.profile, "$DANNLIB_RESULTS (the sweep's summary)")
                if scheduler:
                    check_scheduler(scheduler, setting=scheduler_from)
    except (ValueError, OSError) as exc:
        print(f"dannlib sweep: {exc}", file=sys.stderr)
        return 2
    if args.prune:
        return _prune(store, args.dry_run)
    if args.backfill_fingerprints:
        return _backfill(store, args.data_root, args.dry_run)
    removed = store.clean_partial()
    missing = [s for p in sweep._phases(specs, store, args.recompute) for s in p]
    print(f"sweep [{args.profile}] notebooks {', '.join(notebooks)}: {len(specs)} runs, {len(missing)} to train "
          f"(estimate {estimate_seconds(missing, workers) / 60:.0f} min with {workers} worker(s) on the study's "
          f"2-core CPU); store {store.root}" + (f"; removed {removed} partial file(s)" if removed else ""))
    if args.dry_run:
        for s in missing:
            steps = s.config.get("pretrain_steps") if s.method == "adda_pretrain" else s.config.get("steps")
            print(f"  {s.method:22s} seed {s.seed}  {steps} steps  {s.key}")
        return 0
    summary = sweep.SweepSummary(total=len(specs))
    try:
        sweep.ensure(specs, store=store, workers=workers, scheduler=scheduler, data_root=args.data_root,
               recompute=args.recompute, time_limit=None if time_limit is None else 60 * time_limit)
        summary = sweep.ensure.last_summary
        code = 1 if summary.failed else 0
    except KeyboardInterrupt:
        summary = sweep.ensure.last_summary or summary
        print(f"\nsweep interrupted: {summary.line()}; finished runs are in the store, rerun to continue",
              file=sys.stderr)
        code = 130
    path = results_root() / args.profile / "sweep.json"
    import json

    with atomic_write(path) as fh:
        json.dump({"profile": args.profile, "notebooks": notebooks, "total": summary.total, "found": summary.found,
                   "trained": summary.trained, "failed": summary.failed, "not_started": summary.not_started,
                   "seconds": round(summary.seconds, 1), "workers": workers, "scheduler": bool(scheduler)},
                  fh, indent=1)
    print(f"sweep [{args.profile}]: {summary.line()}")
    for label, err in summary.failed:
        print(f"  failed: {label}: {err}", file=sys.stderr)
    return code
