"""Command line: ``python -m dann_study {sweep,regenerate,report} ...`` (also the ``dann-study`` script)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from . import regenerate
    from .profiles import DEFAULT_PROFILE, PROFILES
    parser = argparse.ArgumentParser(prog="python -m dann_study", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sweep,regenerate,report}")
    sw = sub.add_parser(
        "sweep", help="train every run the selected notebooks need under a profile (resumable, parallel)",
        description="Train every run that the selected notebooks need under a profile, without executing the "
        "notebooks: runs found in the run store are skipped, the missing ones train in worker processes (or on a "
        "Dask cluster), each stored as it finishes. Interrupted, it loses at most the runs in flight; rerun it to "
        "continue. Exit status: 0 all ok, 1 some run failed, 2 bad arguments, 130 interrupted.")
    add = sw.add_argument
    add("--profile", default=DEFAULT_PROFILE, choices=PROFILES,
        help=f"which profile's runs (default: {DEFAULT_PROFILE})")
    add("--only", help="only these notebooks, by number, e.g. 03,05")
    add("--seeds", help="override the profile's seeds, e.g. 0,1,2")
    add("--workers", type=int, help="local worker processes, one torch thread each (default: $DANNLIB_WORKERS or one "
        "per core); 1 trains in this process")
    add("--scheduler", help="a Dask distributed scheduler, tcp://HOST:PORT (default: $DANNLIB_SCHEDULER; unset: local "
        "processes). Start one with `dask scheduler` and `dask worker ADDR`; use only a scheduler and workers you "
        "trust (tls:// on networks you do not control): docs/dask.md")
    add("--time-limit", type=float, metavar="MINUTES", help="start no new run after this many minutes (runs in flight "
        "finish)")
    add("--recompute", action="store_true", help="retrain even the runs found in the store")
    add("--data-root", help="the data root (default: $DANNLIB_DATA, else data/)")
    add("--store", help="the run store (default: $DANNLIB_STORE, else results/runs)")
    add("--dry-run", action="store_true", help="only list what is missing and the estimate")
    add("--backfill-fingerprints", action="store_true", help="train nothing; give the stored runs recorded without a "
        "data fingerprint the fingerprint of the data root's current files, each checked against its SHA256SUMS "
        "(the data they were trained on); with --dry-run, only count them")
    add("--prune", action="store_true", help="train nothing; remove the stored runs that no notebook needs under any "
        "profile (e.g. left behind when a config change gave runs new keys); with --dry-run, only list them")
    regenerate.add_arguments(sub.add_parser(
        "regenerate", help="execute notebooks/NN_*.ipynb in place with papermill (regenerates every figure)"))
    rep = sub.add_parser("report", help="print the results tables (Markdown) built from results/<profile>/",
                         description="Print the study's results tables (Markdown) built from the notebooks' records.")
    rep.add_argument("--profile", default="quick", help="smoke | quick | paper (default: quick)")
    rep.add_argument("--results-dir", help="where the notebooks wrote their records (default: $DANNLIB_RESULTS, "
                     "else the project's results/)")
    return parser


def sweep_main(args: argparse.Namespace) -> int:
    from dannlib import sweep
    from dannlib.settings import check_scheduler, check_time_limit, check_workers, check_writable, scheduler_setting
    from dannlib.store import Store, machine_speed, speed_setting
    from dannlib.utils import atomic_write, resolve_device, results_root, thread_policy

    from .plan import needed_runs, parse_only, parse_seeds, plan_specs, selected_notebooks
    from .profiles import PROFILES
    store = Store(args.store, data_root=args.data_root)
    try:  # every option and setting is checked before anything is trained, removed or written
        if args.data_root is not None and not Path(args.data_root).expanduser().is_dir():
            raise ValueError(f"data root {args.data_root} is not a folder (option --data-root)")
        only = parse_only(args.only)
        seeds = parse_seeds(args.seeds)
        notebooks = selected_notebooks(only)
        specs = list(dict.fromkeys(s for nb in notebooks for s in plan_specs(nb, args.profile, seeds)))
        if args.prune and (args.only or args.seeds):
            raise ValueError("--prune keeps every run that any notebook needs under any profile at that profile's "
                             "seeds: it takes no --only or --seeds")
        workers = check_workers(args.workers, setting="--workers")
        if not (args.prune or args.backfill_fingerprints):  # they train nothing
            thread_policy(), speed_setting(), resolve_device()  # $DANNLIB_THREADS, $DANNLIB_SPEED, $DANNLIB_DEVICE
        time_limit = check_time_limit(args.time_limit)
        scheduler, scheduler_from = scheduler_setting(args.scheduler)
        if not args.dry_run:
            check_writable(store.root, "--store or $DANNLIB_STORE")
            if not (args.prune or args.backfill_fingerprints):
                check_writable(results_root() / args.profile, "$DANNLIB_RESULTS (the sweep's summary)")
                if scheduler:
                    check_scheduler(scheduler, setting=scheduler_from)
    except (ValueError, OSError) as exc:
        print(f"dann_study sweep: {exc}", file=sys.stderr)
        return 2
    if args.prune:
        keep = {run.key for p in PROFILES for run in needed_runs(p)}
        files = store.prune(keep, dry_run=args.dry_run)
        runs = sorted({f"{p.parent.name}/{p.stem}" for p in files})
        print(f"sweep --prune: {len(runs)} stored run(s) that no notebook needs under any profile "
              + ("(dry run: nothing removed)" if args.dry_run else f"removed ({len(files)} files)")
              + f"; store {store.root}" + "".join(f"\n  {r}" for r in runs))
        return 0
    if args.backfill_fingerprints:
        from dannlib.data.common import DataChecksumError, DataNotFoundError, data_root
        from dannlib.data.fingerprint import backfill_store
        try:
            out = backfill_store(store.root, args.data_root, dry_run=args.dry_run)
        except (DataChecksumError, DataNotFoundError) as exc:
            print(f"dann_study sweep --backfill-fingerprints: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        print(f"sweep --backfill-fingerprints: {len(out['added'])} record(s) "
              + ("would get" if args.dry_run else "got") + f" the data fingerprint of {data_root(args.data_root)}; "
              f"{out['had']} had one; {len(out['skipped'])} skipped; store {store.root}"
              + "".join(f"\n  skipped {path}: {why}" for path, why in out["skipped"]))
        return 0
    removed = 0 if args.dry_run else store.clean_partial()  # a dry run changes nothing
    phases = sweep._phases(specs, store, args.recompute)
    missing = [s for p in phases for s in p]
    estimate = sweep.phases_seconds(phases, workers)
    speed = f", {machine_speed():.2f}x the reference CPU's speed" if missing else ""  # the probe only if needed
    print(f"sweep [{args.profile}] notebooks {', '.join(notebooks)}: {len(specs)} runs, {len(missing)} to train "
          f"(estimate {estimate / 60:.0f} min with {workers} worker(s) on this machine{speed}); store {store.root}"
          + (f"; removed {removed} partial file(s)" if removed else ""))
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
    with atomic_write(results_root() / args.profile / "sweep.json") as fh:
        json.dump({"profile": args.profile, "notebooks": notebooks, **asdict(summary),
                   "seconds": round(summary.seconds, 1), "estimate_seconds": round(estimate, 1), "workers": workers,
                   "scheduler": bool(scheduler)}, fh, indent=1)
    print(f"sweep [{args.profile}]: {summary.line()}"
          + (f"; estimated {estimate:.0f} s, took {summary.seconds / estimate:.2f}x that"
             if missing and summary.trained == len(missing) else ""))
    for label, err in summary.failed:
        print(f"  failed: {label}: {err}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sweep":
        return sweep_main(args)
    if args.command == "regenerate":
        from .regenerate import run_from_args
        return run_from_args(args)
    from .report import markdown_report
    try:
        print(markdown_report(args.results_dir, args.profile), end="")
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"dann_study report: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
