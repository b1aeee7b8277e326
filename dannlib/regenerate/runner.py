"""All notebooks in order: the sweep first, the report (regeneration.json), the command line."""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import signal
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Sequence

from ..profiles import DEFAULT_PROFILE, PROFILES, check_profile
from ..utils import PROJECT_ROOT, atomic_write, machine_info
from ..plan import parse_only, parse_seeds
from .common import COMMITTED_PROFILE, CURRENT_ENV_KERNEL, Interrupted, KERNEL_ENV_DOC, NotebookRun, Outputs, REPORT_NAME, SIGNAL_EXIT, _RUNNING_KERNELS, check_outputs_writable, find_notebooks, resolve_outputs, select_notebooks, store_root  # noqa: F401
from .transaction import RunLock, _display, _signals_deferred, clean_stale  # noqa: F401
from .kernel import _kill_kernels, commit, run_notebook  # noqa: F401


# ----------------------------------------------------------------------------- all notebooks


def regenerate(
    profile: str | None = None,
    only: str | Sequence[str] | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    figures_dir: str | os.PathLike | None = None,
    results_dir: str | os.PathLike | None = None,
    seeds: str | Sequence[int] | None = None,
    data_root: str | os.PathLike | None = None,
    kernel: str | None = None,
    progress: bool = True,
    in_place: bool = False,
    runs: list | None = None,
    sweep: bool = True,
    workers: int | None = None,
    partial: bool = False,
) -> list[NotebookRun]:
    """Execute the selected notebooks in order under ``profile`` and keep the report.

    Defaults: ``profile`` $DANNLIB_PROFILE else "quick"; ``notebooks_dir`` the project's
    ``notebooks/``; output folders as :func:`resolve_outputs`. ``seeds`` is injected only
    when given, ``data_root`` reaches the kernel as $DANNLIB_DATA. Raises ValueError for an
    unknown profile, a bad ``only`` or ``seeds``, FileNotFoundError for a missing notebooks
    folder, PermissionError for an output folder that cannot be written, and
    :class:`Interrupted` (a KeyboardInterrupt) when interrupted, after recording it.
    ``partial``: train nothing (no sweep) and inject ``train_missing="stored"``, so the
    notebooks render the runs the store holds so far and say which are missing.
    Returns one :class:`NotebookRun` per executed notebook (also appended to ``runs``)."""
    profile = check_profile(profile if profile is not None else os.environ.get("DANNLIB_PROFILE", DEFAULT_PROFILE))
    only = parse_only(only)
    seeds = parse_seeds(seeds)
    notebooks_dir = Path(notebooks_dir).expanduser().resolve() if notebooks_dir is not None else PROJECT_ROOT / "notebooks"
    notebooks = find_notebooks(notebooks_dir)
    if not notebooks:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {notebooks_dir} (option --notebooks-dir)")
    selected = select_notebooks(notebooks, only)
    outputs = resolve_outputs(profile, notebooks_dir, figures_dir, results_dir, in_place)
    if data_root is not None:
        data_root = Path(data_root).expanduser().resolve()
        if not data_root.is_dir():
            raise FileNotFoundError(f"data root {data_root} is not a folder (option --data-root)")
    from ..settings import check_workers

    workers = check_workers(workers, setting="--workers")
    check_outputs_writable(outputs, store=not partial)
    with RunLock([outputs.notebooks, outputs.figures, outputs.results]) as lock:
        clean_stale([notebooks_dir, outputs.notebooks], [outputs.figures, outputs.results])
        return _regenerate(selected, profile, seeds, partial, sweep, outputs, data_root, kernel, progress, runs,
                           workers, lock.id)


def _regenerate(selected, profile, seeds, partial, sweep, outputs, data_root, kernel, progress, runs, workers,
                run_id) -> list[NotebookRun]:
    """:func:`regenerate` once its settings are checked and its :class:`RunLock` is held."""
    parameters = {"profile": profile}
    if seeds is not None:
        parameters["seeds"] = seeds
    if partial:
        parameters["train_missing"] = "stored"
        sweep = False

    from tqdm.auto import tqdm

    runs = [] if runs is None else runs
    report = RunReport(outputs, profile, parameters, kernel)
    if sweep:
        report.info["sweep"] = run_sweep(selected, profile, seeds, outputs, data_root, workers, progress)
    bar = tqdm(selected, desc=f"regenerate ({profile})", unit="notebook", position=0, disable=not progress)
    current = None
    try:
        for path in bar:
            current = path
            bar.set_postfix_str(path.stem)
            start = time.perf_counter()
            try:
                run, plan = run_notebook(path, parameters, outputs, profile, kernel_name=kernel,
                                         progress=progress, data_root=data_root, run_id=run_id)
            except KeyboardInterrupt as exc:
                signum = getattr(exc, "signum", signal.SIGINT)
                with _signals_deferred():
                    runs.append(NotebookRun(path.stem, "interrupted", round(time.perf_counter() - start, 2),
                                            error=f"interrupted by {signal.Signals(signum).name}"))
                    report.write(runs, interrupted=signal.Signals(signum).name)
                raise
            with _signals_deferred():  # a signal now waits until the notebook is in place and recorded
                if plan is not None:
                    commit(plan, outputs.notebooks, path.stem, run_id)
                runs.append(run)
                report.write(runs)
            current = None
            if run.status != "ok":
                tqdm.write(f"FAILED {run.notebook}: {run.error}", file=sys.stderr)
    except KeyboardInterrupt as exc:
        if current is None:  # between notebooks
            with _signals_deferred():
                report.write(runs, interrupted=signal.Signals(getattr(exc, "signum", signal.SIGINT)).name)
        raise
    finally:
        bar.close()
    return runs


def run_sweep(selected, profile, seeds, outputs, data_root, workers, progress) -> dict:
    """Train the runs the selected notebooks need (:func:`dannlib.sweep.ensure`, worker
    processes, a progress bar over the runs) before any notebook starts, so the notebooks
    only render. Returns the sweep's summary for the report."""
    from ..plan import NOTEBOOKS, plan_specs
    from ..store import Store
    from ..sweep import ensure

    numbers = [p.name[:2] for p in selected if p.stem in NOTEBOOKS.values()]
    specs = list(dict.fromkeys(s for n in numbers for s in plan_specs(n, profile, seeds)))
    if not specs:
        return {"total": 0}
    store = Store(store_root(outputs))
    store.clean_partial()
    ensure(specs, store=store, workers=workers, data_root=data_root, progress=progress)
    summary = ensure.last_summary
    print(f"regenerate: sweep: {summary.line()}", file=sys.stderr)
    for label, err in summary.failed:
        print(f"regenerate: sweep: failed {label}: {err}", file=sys.stderr)
    return {"total": summary.total, "found": summary.found, "trained": summary.trained,
            "failed": len(summary.failed), "seconds": round(summary.seconds, 1)}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunReport:
    """``results/<profile>/regeneration.json`` of one regeneration, rewritten atomically."""

    def __init__(self, outputs: Outputs, profile: str, parameters: dict, kernel: str | None):
        self.path = outputs.results / profile / REPORT_NAME
        self.profile = profile
        self.started_at = _now()
        self.t0 = time.monotonic()  # wall_seconds: the sweep and every notebook, from here
        self.info = {
            "started_at": self.started_at,
            "kernel": kernel or f"{CURRENT_ENV_KERNEL} (this interpreter, {_display(sys.executable, PROJECT_ROOT)})",
            "parameters": dict(parameters),
            "in_place": outputs.in_place,
            "outputs": {k: _display(getattr(outputs, k), outputs.project)
                        for k in ("notebooks", "figures", "results")},
            "machine": machine_info(),
        }

    def write(self, runs: Sequence[NotebookRun], interrupted: str | None = None) -> Path:
        wall = round(time.monotonic() - self.t0, 1)
        return write_report(self.path, self.profile, runs, {**self.info, "finished_at": _now(), "wall_seconds": wall,
                                                              **({"interrupted": interrupted} if interrupted else {})})


def write_report(path: Path, profile: str, runs: Sequence[NotebookRun], run_info: dict) -> Path:
    """Merge ``runs`` into the report at ``path`` (atomically).

    Per notebook: the last attempt's fields (``status``, ``seconds``, ``error``,
    ``failed_copy``, ``peak_rss_mib``, ``run``: the key of its entry in ``runs``) and
    ``last_ok``: the same fields of the last successful attempt (null if none), whose
    outputs are the ones in place. Entries of notebooks not run now are kept (e.g. after
    ``--only``); ``runs`` keeps the runs still referenced, with their machine.
    ``peak_rss_mib`` is the peak resident set of the notebook's kernel process (Linux
    ``VmHWM``; null where not measurable; DataLoader workers not included)."""
    report = {"profile": profile, "notebooks": {}, "runs": {}}
    old_from_scratch = None
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            old = json.loads(path.read_text())
            if isinstance(old, dict) and old.get("profile") == profile:
                report["notebooks"].update(old.get("notebooks", {}))
                report["runs"].update(old.get("runs", {}))
                # (also found in a report written before from_scratch existed)
                old_from_scratch = _from_scratch(report, old.get("from_scratch"))
    key = run_info["started_at"]
    report["runs"][key] = run_info
    for run in runs:
        previous = report["notebooks"].get(run.notebook, {})
        if "last_ok" in previous:
            last_ok = previous["last_ok"]
        else:  # a report of an older version: its entry is its last attempt
            last_ok = {k: v for k, v in previous.items() if k != "last_ok"} if previous.get("status") == "ok" else None
        entry = {**asdict(run), "run": key}
        report["notebooks"][run.notebook] = {**entry, "last_ok": dict(entry) if run.status == "ok" else last_ok}
    report["from_scratch"] = _from_scratch(report, old_from_scratch)
    used = set()
    for entry in report["notebooks"].values():
        used.add(entry.get("run"))
        if entry.get("last_ok"):
            used.add(entry["last_ok"].get("run"))
    report["runs"] = {k: v for k, v in report["runs"].items() if k in used}
    report["notebooks"] = dict(sorted(report["notebooks"].items()))
    with atomic_write(path) as fh:
        json.dump(report, fh, indent=2, sort_keys=False)
        fh.write("\n")
    return path


def _from_scratch(report: dict, previous: dict | None) -> dict | None:
    """The latest regeneration that trained every run it needed (its sweep found none in the
    store, failed none) and executed every notebook successfully: what ``make figures`` costs
    from an empty store, kept (with its ``wall_seconds``) even after later regenerations that
    only render. ``previous`` is the entry already in the report."""
    best = previous
    notebooks = report["notebooks"].values()
    for key, info in report["runs"].items():
        sweep = info.get("sweep") or {}
        complete = bool(notebooks) and all(e.get("run") == key and e.get("status") == "ok" for e in notebooks)
        if (complete and sweep.get("found") == 0 and sweep.get("trained", 0) > 0 and not sweep.get("failed")
                and not info.get("interrupted") and (best is None or key > best.get("started_at", ""))):
            best = info
    return best


def format_summary(runs: Sequence[NotebookRun]) -> str:
    """A plain-text table: notebook, status, seconds (and the error of a failure)."""
    width = max([len("notebook")] + [len(r.notebook) for r in runs])
    lines = [f"{'notebook':<{width}}  {'status':<6}  {'seconds':>8}"]
    for r in runs:
        line = f"{r.notebook:<{width}}  {r.status:<6}  {r.seconds:>8.1f}"
        if r.error:
            line += f"  {r.error}"
        if r.failed_copy:
            line += f"  (kept as {r.failed_copy})"
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


_HELP_PARAGRAPHS = (
    f"Where outputs go: only the profile the committed notebooks carry ({COMMITTED_PROFILE!r}, "
    "COMMITTED_PROFILE) executes notebooks/ in place and writes figures/. Any other profile "
    "writes its executed notebooks to .tmp/<profile>/notebooks/ and its figures to "
    ".tmp/<profile>/figures/ (.tmp/ beside the notebooks folder), unless --in-place is given or "
    "--figures-dir/$DANNLIB_FIGURES names the figures folder. Records always go to "
    "<results>/<profile>/, with regeneration.json (per notebook: the last attempt and, as "
    "'last_ok', the last success).",
    "Each notebook is a transaction: it writes into staging folders, and only when it succeeds "
    "are its notebook, its figure folder and its records moved into place. A failing or "
    "interrupted notebook leaves the previous ones exactly as they were (a failure's partial "
    "run is kept in .failed/ beside the executed notebooks); later notebooks still run. "
    "Leftovers of killed runs are cleaned up at the start.",
    "Papermill injects only profile (and seeds), never a path. " + KERNEL_ENV_DOC,
    "Exit status: 0 all succeeded, 1 some notebook failed, 2 bad arguments or an unwritable "
    "output folder, 130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM.",
)
HELP_EPILOG = "\n\n".join(textwrap.fill(p, 88) for p in _HELP_PARAGRAPHS)


HELP_DESCRIPTION = textwrap.fill(
    "Execute notebooks/NN_*.ipynb in number order with papermill, each notebook as a "
    "transaction (see below); the kernel is this interpreter, its working directory the "
    "notebooks folder.", 88)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = HELP_DESCRIPTION
    parser.epilog = HELP_EPILOG
    parser.add_argument(
        "--profile", default=None,
        help=f"one of {', '.join(PROFILES)} (default: $DANNLIB_PROFILE, else {DEFAULT_PROFILE})",
    )
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03 (default: all)")
    parser.add_argument("--notebooks-dir", default=None, help="folder of NN_*.ipynb (default: the project's notebooks/)")
    parser.add_argument("--figures-dir", default=None,
                        help="default: $DANNLIB_FIGURES, else the project's figures/ (profile "
                             f"{COMMITTED_PROFILE} or --in-place) or .tmp/<profile>/figures")
    parser.add_argument("--results-dir", default=None, help="default: $DANNLIB_RESULTS, else the project's results/")
    parser.add_argument("--in-place", action="store_true",
                        help=f"execute the notebooks in place and write figures/ also for a profile other than "
                             f"{COMMITTED_PROFILE} (overwrites the committed notebooks)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2 (default: each profile's)")
    parser.add_argument("--data-root", default=None,
                        help="data root, given to the kernel as $DANNLIB_DATA (default: the notebooks use "
                             "$DANNLIB_DATA, else data/)")
    parser.add_argument(
        "--kernel", default=None,
        help="an installed jupyter kernelspec name (default: this interpreter, %s)" % sys.executable,
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--no-sweep", action="store_true",
                        help="do not train the notebooks' missing runs first (python -m dannlib sweep); the "
                             "notebooks then train small missing sets themselves and stop on large ones")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes of that sweep (default: $DANNLIB_WORKERS or one per core)")
    parser.add_argument("--normalize", action="store_true",
                        help="execute nothing: rewrite the selected notebooks (in --notebooks-dir) as JupyterLab "
                             "would save them after opening them (this interpreter's kernelspec), so that opening "
                             "one does not mark it modified")
    parser.add_argument("--partial", action="store_true",
                        help="train nothing: render the runs the store holds so far (e.g. while a long sweep "
                             "runs); each notebook says which runs are missing")


@contextlib.contextmanager
def _clean_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread for the block."""

    def handler(signum, _frame):
        # A second signal while cleaning up is ignored: the clean-up is short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _kill_kernels(_RUNNING_KERNELS)
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in SIGNAL_EXIT}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_from_args(args: argparse.Namespace) -> int:
    """The ``regenerate`` subcommand: 0 all succeeded, 1 some notebook failed, 2 bad input,
    130/143 interrupted by SIGINT/SIGTERM."""
    runs: list[NotebookRun] = []
    if getattr(args, "normalize", False):
        return _normalize(args)
    try:
        with _clean_signals():
            regenerate(
                profile=args.profile, only=args.only, notebooks_dir=args.notebooks_dir,
                figures_dir=args.figures_dir, results_dir=args.results_dir, seeds=args.seeds,
                data_root=args.data_root, kernel=args.kernel, progress=not args.no_progress,
                in_place=getattr(args, "in_place", False), runs=runs, sweep=not getattr(args, "no_sweep", False),
                workers=getattr(args, "workers", None), partial=getattr(args, "partial", False),
            )
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        done = [r.notebook for r in runs if r.status != "interrupted"]
        stopped = [r.notebook for r in runs if r.status == "interrupted"]
        print(f"regenerate: interrupted by {signal.Signals(signum).name}"
              + (f" during {stopped[0]} (left as it was)" if stopped else "")
              + f"; {len(done)} notebook(s) finished before: {', '.join(done) or 'none'}", file=sys.stderr)
        return SIGNAL_EXIT.get(signum, 130)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"regenerate: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(runs))
    failed = [r.notebook for r in runs if r.status != "ok"]
    if failed:
        print(f"regenerate: {len(failed)} of {len(runs)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _normalize(args: argparse.Namespace) -> int:
    """``regenerate --normalize``: :func:`~dannlib.regenerate.transaction.normalize_notebook`
    on the selected notebooks, in place; nothing is executed."""
    from .transaction import normalize_notebook

    try:
        folder = Path(args.notebooks_dir).expanduser().resolve() if args.notebooks_dir else PROJECT_ROOT / "notebooks"
        selected = select_notebooks(find_notebooks(folder), parse_only(args.only))
    except (ValueError, FileNotFoundError) as exc:
        print(f"regenerate: error: {exc}", file=sys.stderr)
        return 2
    changed = [p.name for p in selected if normalize_notebook(p, args.kernel)]
    print(f"regenerate --normalize: {len(changed)} of {len(selected)} notebook(s) rewritten"
          + (f": {', '.join(changed)}" if changed else ""))
    return 0
