"""Command line: ``python -m dannlib {sweep,regenerate,report} ...`` (also the ``dannlib`` script).

A thin dispatcher; each subcommand lives in its own module.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from . import regenerate, sweep_command

    parser = argparse.ArgumentParser(prog="python -m dannlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sweep,regenerate,report}")
    sw = sub.add_parser(
        "sweep",
        help="train every run the selected notebooks need under a profile (resumable, parallel)",
        description="Train every run that the selected notebooks need under a profile, without executing "
        "the notebooks: runs found in the run store are skipped, the missing ones train in worker "
        "processes (or on a Dask cluster), each stored as it finishes. Interrupted, it loses at most the "
        "runs in flight; rerun it to continue. Exit status: 0 all ok, 1 some run failed, 2 bad arguments, "
        "130 interrupted.",
    )
    sweep_command.add_arguments(sw)
    regen = sub.add_parser(
        "regenerate",
        help="execute notebooks/NN_*.ipynb in place with papermill (regenerates every figure)",
        description="Execute notebooks/NN_*.ipynb in order, in place, with papermill. A failing "
        "notebook keeps its previous file (its partial run goes to notebooks/.failed/); the others "
        "still run. Exit status: 0 all succeeded, 1 some notebook failed, 2 bad arguments.",
    )
    regenerate.add_arguments(regen)
    # Everything after "report" (including --help) is passed on to dannlib.report.main.
    sub.add_parser("report", help="print the results tables (Markdown) built from results/<profile>/",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "report":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "sweep":
        from .sweep_command import run_from_args as sweep_main

        return sweep_main(args)
    if args.command == "regenerate":
        from .regenerate import run_from_args

        return run_from_args(args)
    if args.command == "report":
        from .report import main as report_main

        return int(report_main(extra) or 0)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others


if __name__ == "__main__":
    sys.exit(main())
