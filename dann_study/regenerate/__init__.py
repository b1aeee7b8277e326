"""Regenerate every figure: ``python -m dann_study regenerate`` executes ``notebooks/NN_*.ipynb`` with papermill in
number order (after a sweep of their missing runs), each notebook a transaction (:mod:`.transaction`); see the
help (``_HELP``) for where outputs go, the kernel's environment and the exit statuses."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import textwrap
import time
from collections import namedtuple
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from dannlib.data.common import cache_dir
from dannlib.settings import check_scheduler, check_workers, check_writable, scheduler_setting
from dannlib.store import Store, store_root
from dannlib.utils import PROJECT_ROOT, atomic_write, machine_info

from ..plan import NOTEBOOKS, parse_only, parse_seeds, plan_specs
from ..profiles import DEFAULT_PROFILE, PROFILES, check_profile
from .transaction import (JOURNAL_SUFFIX, REPORT_NAME, RUNNING_SUFFIX, STAGING_PREFIX, RunLock, _apply_commit,
                          _plan_commit, _signals_deferred, clean_stale, digests, normalize_notebook, path_replacements,
                          tidy_notebook)

COMMITTED_PROFILE = "paper"  # the profile the committed notebooks and figures/ carry: only it works in place
KERNEL_ENV = {"DANNLIB_PROGRESS": "0", "TQDM_DISABLE": "1"}  # no progress bars (tqdm >= 4.66 reads TQDM_*)
_RUNNING_KERNELS: list = []  # the kernel managers of the notebook now running (a signal kills their kernels)
# Where a regeneration writes: ``project`` (the notebooks folder's parent) holds .tmp/; ``store``: the run store.
Outputs = namedtuple("Outputs", "notebooks figures results in_place project store")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: ``Interrupted(signum)`` (the exit status is 128 + signum)."""

    signum = property(lambda self: self.args[0] if self.args else signal.SIGINT)


@dataclass
class NotebookRun:
    """The outcome of executing one notebook (``status``: "ok", "failed" or "interrupted")."""

    notebook: str
    status: str
    seconds: float
    error: str | None = None
    failed_copy: str | None = None  # the failed execution, kept (relative to the project)
    peak_rss_mib: float | None = None  # the kernel's peak resident memory (Linux VmHWM)


def find_notebooks(notebooks_dir: str | os.PathLike) -> list[Path]:
    """The notebooks ``NN_*.ipynb`` in ``notebooks_dir``, in order; FileNotFoundError if there are none."""
    if not (found := sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_?*.ipynb") if p.is_file())):
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {notebooks_dir} (option --notebooks-dir)")
    return found


def select_notebooks(notebooks: Sequence[Path], only: Sequence[str] | None) -> list[Path]:
    """The notebooks whose number is in ``only`` (all for None); ValueError naming those available."""
    available = sorted({p.name[:2] for p in notebooks})
    if unknown := [n for n in only or [] if n not in available]:
        raise ValueError(f"unknown notebook number(s) for only: {', '.join(unknown)}; "
                         f"available: {', '.join(available) or '(no notebooks)'}")
    return [p for p in notebooks if only is None or p.name[:2] in only]


def resolve_outputs(profile: str, notebooks_dir: Path, figures_dir=None, results_dir=None,
                    in_place: bool = False) -> Outputs:
    """figures: ``figures_dir`` > $DANNLIB_FIGURES > ``figures/`` (committed profile or ``in_place``)
    > ``.tmp/<profile>/figures``; results: ``results_dir`` > $DANNLIB_RESULTS > ``results/``."""
    in_place, scratch = bool(in_place) or profile == COMMITTED_PROFILE, notebooks_dir.parent / ".tmp" / profile
    figures = figures_dir if figures_dir is not None else os.environ.get("DANNLIB_FIGURES")
    figures = Path(figures).expanduser().resolve() if figures else (PROJECT_ROOT if in_place else scratch) / "figures"
    results = results_dir if results_dir is not None else os.environ.get("DANNLIB_RESULTS")
    results = Path(results).expanduser().resolve() if results else PROJECT_ROOT / "results"
    return Outputs(notebooks_dir if in_place else scratch / "notebooks", figures, results, in_place,
                   notebooks_dir.parent, store_root(results))


def _display(path: str | os.PathLike, project: Path) -> str:
    """``path`` relative to ``project``, else its last two parts: no machine path in a report."""
    path = Path(path)
    return (path.relative_to(project).as_posix() or ".") if path.is_relative_to(project) else \
        "…/" + "/".join(path.parts[-2:])


def _kernel_manager_class(env: dict):
    """A kernel manager: ``python3`` is this interpreter (as nbval's --nbval-current-env) with ``env`` added,
    sockets encrypted (no warning about plain TCP), ``peak`` the kernel's peak memory (MiB, Linux VmHWM)."""
    import zmq
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec

    env = {k: v.replace("$", "$$") for k, v in env.items()}  # the provisioner expands $NAME in a spec's env

    class Manager(AsyncKernelManager):
        peak = None

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs, **({"transport_encryption": "auto"} if zmq.has("curve") else {}))
            self._kernel_spec = KernelSpec(resource_dir=RESOURCES, **{**get_kernel_dict(), "env": env})
            _RUNNING_KERNELS.append(self)

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            with contextlib.suppress(OSError, AttributeError, IndexError, ValueError):
                status = Path(f"/proc/{self.provisioner.pid}/status").read_text()
                self.peak = int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB
            await super().shutdown_kernel(now=now, restart=restart)

    return Manager


def _kill_kernels() -> None:
    """SIGKILL the running notebook's kernels (each its own process group) on an interruption."""
    while _RUNNING_KERNELS:
        km = _RUNNING_KERNELS.pop()
        with contextlib.suppress(Exception):
            pgid = km.provisioner.pgid
            if pgid and pgid != os.getpgid(0):  # never our own group (a kernel that did not get its own)
                os.killpg(pgid, signal.SIGKILL)
            km.provisioner.process.wait()
        km.cleanup_connection_file()


def run_notebook(path: str | os.PathLike, parameters: dict, outputs: Outputs, profile: str, progress: bool = True,
                 data_root: Path | None = None, run_id: str | None = None) -> tuple[NotebookRun, dict | None]:
    """Execute one notebook with papermill (cwd its folder) into staging named by ``run_id`` (the
    caller's :class:`RunLock`). Returns the run (a failing cell included) and, on success, the commit
    plan; an interruption kills the kernel, removes the staging and propagates."""
    import nbformat
    import papermill

    path = Path(path).resolve()
    target, executed = outputs.notebooks / path.name, outputs.notebooks / f".{path.stem}.{run_id}{RUNNING_SUFFIX}"
    fig_stage, res_stage = (d / f"{STAGING_PREFIX}{run_id}-{path.stem}" for d in (outputs.figures, outputs.results))
    # the data and a set cache folder, absolute: the kernel's working folder is the notebooks folder, not this one's
    data = data_root or os.environ.get("DANNLIB_DATA", "").strip()
    data = str(Path(data).expanduser().absolute()) if data else ""
    cache = {"DANNLIB_CACHE": str(cache_dir())} if os.environ.get("DANNLIB_CACHE", "").strip() else {}
    env = {**KERNEL_ENV, "DANNLIB_FIGURES": str(fig_stage), "DANNLIB_RESULTS": str(res_stage),
           "DANNLIB_PROFILE": profile, "DANNLIB_STORE": str(outputs.store), **({"DANNLIB_DATA": data} if data else {}),
           **cache}
    mode = (target if target.exists() else path).stat().st_mode & 0o7777
    run, plan, start = NotebookRun(path.stem, "ok", 0.0), None, time.perf_counter()
    _RUNNING_KERNELS.clear()
    try:
        for folder in (outputs.notebooks, fig_stage, res_stage):
            folder.mkdir(parents=True, exist_ok=True)
        if (outputs.results / profile).is_dir():  # earlier notebooks' records and networks, to read
            shutil.copytree(outputs.results / profile, res_stage / profile, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".*", REPORT_NAME))
        copied = digests(res_stage)
        papermill.execute_notebook(
            str(path), str(executed), parameters=parameters, cwd=str(path.parent), kernel_name="python3",
            kernel_manager_class=_kernel_manager_class(env),
            progress_bar={"desc": path.stem, "position": 1, "leave": False} if progress else False)
        rules = path_replacements([(fig_stage, os.path.relpath(outputs.figures, path.parent)),
                                   (res_stage, os.path.relpath(outputs.results, path.parent)),
                                   *((p, os.path.relpath(p, path.parent)) for p in (outputs.project, PROJECT_ROOT)),
                                   *([(data, "$DANNLIB_DATA")] if data else []), (Path.home(), "~")])
        nb = nbformat.read(executed, as_version=4)
        tidy_notebook(nb, path.name, parameters, rules)
        nbformat.write(nb, str(executed))
        os.chmod(executed, mode)
        plan = _plan_commit(executed, target, fig_stage, outputs.figures, res_stage, outputs.results, copied)
    except KeyboardInterrupt:
        _kill_kernels()
        raise
    except Exception as exc:  # a failing notebook must not stop the others
        run.status, run.error = "failed", f"{type(exc).__name__}: {str(exc).strip().partition(chr(10))[0]}"
        if hasattr(exc, "ename"):  # papermill.PapermillExecutionError: the notebook's own exception
            run.error = f"cell [{exc.exec_count}] {exc.ename}: {exc.evalue}"
        if executed.exists() and executed.stat().st_size > 0:  # papermill saved the partial execution
            failed = outputs.notebooks / ".failed" / path.name
            failed.parent.mkdir(exist_ok=True)
            os.chmod(executed, mode)
            os.replace(executed, failed)
            run.failed_copy = _display(failed, outputs.project)
    finally:
        run.seconds = round(time.perf_counter() - start, 2)
        if plan is None:
            shutil.rmtree(fig_stage, ignore_errors=True)
            shutil.rmtree(res_stage, ignore_errors=True)
            executed.unlink(missing_ok=True)
    run.peak_rss_mib = max((round(km.peak, 1) for km in _RUNNING_KERNELS if km.peak), default=None)
    _RUNNING_KERNELS.clear()  # this notebook's kernels are shut down: a later signal must not kill their old group ids
    return run, plan


def regenerate(profile: str | None = None, only=None, notebooks_dir=None, figures_dir=None, results_dir=None,
               seeds=None, data_root=None, progress: bool = True, in_place: bool = False, runs: list | None = None,
               sweep: bool = True, workers: int | None = None, partial: bool = False) -> list[NotebookRun]:
    """Sweep the selected notebooks' missing runs (``partial``: none, render the runs stored so far), then
    execute them in order under ``profile`` (default $DANNLIB_PROFILE, else "quick"); ValueError,
    FileNotFoundError or PermissionError before anything starts. Returns (and appends to ``runs``) the runs."""
    from tqdm.auto import tqdm

    profile = check_profile(profile if profile is not None else os.environ.get("DANNLIB_PROFILE", DEFAULT_PROFILE))
    only, seeds = parse_only(only), parse_seeds(seeds)
    notebooks_dir = Path(notebooks_dir or PROJECT_ROOT / "notebooks").expanduser().resolve()
    selected = select_notebooks(find_notebooks(notebooks_dir), only)
    outputs = resolve_outputs(profile, notebooks_dir, figures_dir, results_dir, in_place)
    # absolute, for the sweep and the kernels alike (a kernel's working folder is the notebooks folder)
    data_from = "option --data-root" if data_root is not None else "$DANNLIB_DATA"
    data_root = data_root if data_root is not None else os.environ.get("DANNLIB_DATA", "").strip() or None
    data_root = Path(data_root).expanduser().resolve() if data_root is not None else None
    if data_root is not None and not data_root.is_dir():
        raise FileNotFoundError(f"data root {data_root} is not a folder ({data_from})")
    workers = check_workers(workers, setting="--workers")
    if sweep and not partial and (scheduler := scheduler_setting(None))[0]:
        check_scheduler(scheduler[0], setting=scheduler[1])
    check_writable(outputs.notebooks, f"--notebooks-dir (or, for a profile other than {COMMITTED_PROFILE!r} "
                                      "without --in-place, the folder .tmp/ beside the notebooks)")
    check_writable(outputs.figures, "--figures-dir or $DANNLIB_FIGURES")
    check_writable(outputs.results, "--results-dir or $DANNLIB_RESULTS")
    if not partial:
        check_writable(outputs.store, "$DANNLIB_STORE (default: <results>/runs)")
    parameters = {"profile": profile, **({"seeds": seeds} if seeds is not None else {}),
                  **({"train_missing": "stored"} if partial else {})}
    runs = [] if runs is None else runs
    info = {"started_at": _now(), "parameters": parameters, "in_place": outputs.in_place,
            "kernel": f"python3 (this interpreter, {_display(sys.executable, PROJECT_ROOT)})",
            "outputs": {k: _display(getattr(outputs, k), outputs.project) for k in ("notebooks", "figures", "results")},
            "machine": machine_info()}
    t0 = time.monotonic()  # wall_seconds: the sweep and every notebook

    def report(interrupted=None):
        with _signals_deferred():
            write_report(outputs.results / profile / REPORT_NAME, profile, runs, {
                **info, "finished_at": _now(), "wall_seconds": round(time.monotonic() - t0, 1),
                **({"interrupted": interrupted} if interrupted else {})})

    with RunLock([outputs.notebooks, outputs.figures, outputs.results]) as lock:
        clean_stale([notebooks_dir, outputs.notebooks], [outputs.figures, outputs.results])
        if sweep and not partial:
            info["sweep"] = run_sweep(selected, profile, seeds, outputs, data_root, workers, progress)
        with tqdm(selected, desc=f"regenerate ({profile})", unit="notebook", position=0, disable=not progress) as bar:
            try:
                for path in bar:
                    bar.set_postfix_str(path.stem)
                    start = time.perf_counter()
                    try:
                        run, plan = run_notebook(path, parameters, outputs, profile, progress=progress,
                                                 data_root=data_root, run_id=lock.id)
                    except KeyboardInterrupt as exc:
                        runs.append(NotebookRun(path.stem, "interrupted", round(time.perf_counter() - start, 2),
                                                error=f"interrupted by {_signal_name(exc)}"))
                        raise
                    with _signals_deferred():  # a signal now waits until the notebook is in place and recorded
                        if plan is not None:  # journalled first: clean_stale replays it if this process dies;
                            # in the results folder, which every profile's run scans (it shares the staging there)
                            journal = outputs.results / f".{path.stem}.{lock.id}{JOURNAL_SUFFIX}"
                            with atomic_write(journal) as fh:
                                json.dump(plan, fh)
                            _apply_commit(plan)
                            journal.unlink()
                        runs.append(run)
                        report()
                    if run.status != "ok":
                        tqdm.write(f"FAILED {run.notebook}: {run.error}", file=sys.stderr)
            except KeyboardInterrupt as exc:
                report(interrupted=_signal_name(exc))
                raise
    return runs


def _signal_name(exc: BaseException) -> str:
    return signal.Signals(getattr(exc, "signum", signal.SIGINT)).name


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def run_sweep(selected, profile, seeds, outputs, data_root, workers, progress) -> dict:
    """Train the runs the selected notebooks need (:func:`dannlib.sweep.ensure`); the summary for the report."""
    from dannlib.sweep import ensure

    numbers = [p.name[:2] for p in selected if p.stem in NOTEBOOKS.values()]
    if not (specs := list(dict.fromkeys(s for n in numbers for s in plan_specs(n, profile, seeds)))):
        return {"total": 0}
    store = Store(outputs.store)
    store.clean_partial()
    ensure(specs, store=store, workers=workers, data_root=data_root, progress=progress)
    s = ensure.last_summary
    print(f"regenerate: sweep: {s.line()}", *(f"regenerate: sweep: failed {label}: {err}" for label, err in s.failed),
          sep="\n", file=sys.stderr)
    return {"total": s.total, "found": s.found, "trained": s.trained, "failed": len(s.failed),
            "seconds": round(s.seconds, 1)}


def write_report(path: Path, profile: str, runs: Sequence[NotebookRun], run_info: dict) -> Path:
    """Merge ``runs`` into the report at ``path`` (atomically). Per notebook: the last attempt
    (:class:`NotebookRun`'s fields and ``run``, its key in ``runs``) and ``last_ok``, the last success,
    whose outputs are in place; ``runs`` keeps the regenerations still referenced, ``from_scratch`` the
    latest that trained every run it needed and executed every notebook (``make figures`` from scratch)."""
    def from_scratch(best: dict | None) -> dict | None:
        entries = report["notebooks"].values()
        for key, info in report["runs"].items():
            sweep = info.get("sweep") or {}
            if (entries and all(e.get("run") == key and e.get("status") == "ok" for e in entries)
                    and sweep.get("found") == 0 and sweep.get("trained", 0) > 0 and not sweep.get("failed")
                    and not info.get("interrupted") and (best is None or key > best.get("started_at", ""))):
                best = info
        return best

    old = {}
    with contextlib.suppress(ValueError, OSError):
        old = json.loads(path.read_text())
    old = old if isinstance(old, dict) and old.get("profile") == profile else {}
    report = {"profile": profile, "notebooks": dict(old.get("notebooks", {})), "runs": dict(old.get("runs", {}))}
    scratch = from_scratch(old.get("from_scratch"))  # (also in a report written before it existed)
    report["runs"][run_info["started_at"]] = run_info
    for run in runs:
        previous = report["notebooks"].get(run.notebook, {})
        last_ok = previous.get("last_ok", previous if previous.get("status") == "ok" else None)  # (older: none)
        entry = {**asdict(run), "run": run_info["started_at"]}
        report["notebooks"][run.notebook] = {**entry, "last_ok": dict(entry) if run.status == "ok" else last_ok}
    report["from_scratch"] = from_scratch(scratch)
    used = {r for e in report["notebooks"].values() for r in (e.get("run"), (e.get("last_ok") or {}).get("run"))}
    report["runs"] = {k: v for k, v in report["runs"].items() if k in used}
    report["notebooks"] = dict(sorted(report["notebooks"].items()))
    with atomic_write(path) as fh:
        fh.write(json.dumps(report, indent=2) + "\n")
    return path


_HELP = (
    f"Where outputs go: only the profile the committed notebooks carry ({COMMITTED_PROFILE!r}, COMMITTED_PROFILE) "
    "executes notebooks/ in place and writes figures/. Any other profile writes its executed notebooks to "
    ".tmp/<profile>/notebooks/ and its figures to .tmp/<profile>/figures/ (.tmp/ beside the notebooks folder), "
    "unless --in-place is given or --figures-dir/$DANNLIB_FIGURES names the figures folder. Records always go to "
    "<results>/<profile>/, with regeneration.json (per notebook: the last attempt and the last success).",
    "Each notebook is a transaction: its notebook, figure folder and records move into place only when every cell "
    "succeeded. A failing or interrupted notebook leaves the previous ones as they were (a failure's partial run "
    "is kept in .failed/ beside the executed notebooks); later notebooks still run. Leftovers of killed runs are "
    "cleaned up at the start.",
    "Papermill injects only profile (and seeds), never a path. The kernel's environment: DANNLIB_FIGURES and "
    "DANNLIB_RESULTS (the notebook's staging folders), DANNLIB_PROFILE, DANNLIB_STORE, DANNLIB_DATA (from "
    "--data-root, else as inherited) and DANNLIB_CACHE where set, all made absolute, DANNLIB_PROGRESS=0 and "
    "TQDM_DISABLE=1 (no progress bars in saved notebooks).",
    "Exit status: 0 all succeeded, 1 some notebook failed, 2 bad arguments or settings, an unwritable output folder "
    "or an unreachable Dask scheduler ($DANNLIB_SCHEDULER), 130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM.",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = textwrap.fill(
        "Execute notebooks/NN_*.ipynb in number order with papermill, each notebook as a transaction (see below); "
        f"the kernel is this interpreter ({sys.executable}), its working directory the notebooks folder.", 88)
    parser.epilog = "\n\n".join(textwrap.fill(p, 88) for p in _HELP)
    add = parser.add_argument
    add("--profile", help=f"one of {', '.join(PROFILES)} (default: $DANNLIB_PROFILE, else {DEFAULT_PROFILE})")
    add("--only", help="comma-separated notebook numbers, e.g. 01,03 (default: all)")
    add("--notebooks-dir", help="folder of NN_*.ipynb (default: the project's notebooks/)")
    add("--figures-dir", help=f"default: $DANNLIB_FIGURES, else figures/ ({COMMITTED_PROFILE} or --in-place) or "
        ".tmp/<profile>/figures")
    add("--results-dir", help="default: $DANNLIB_RESULTS, else the project's results/")
    add("--in-place", action="store_true", help="execute the notebooks in place and write figures/ also for a profile "
        f"other than {COMMITTED_PROFILE} (overwrites the committed notebooks)")
    add("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: each profile's)")
    add("--data-root", help="the data root, given to the kernel as $DANNLIB_DATA (default: $DANNLIB_DATA, else data/)")
    add("--no-progress", action="store_true", help="hide the progress bars")
    add("--no-sweep", action="store_true", help="do not train the notebooks' missing runs first (python -m dann_study "
        "sweep); the notebooks then train small missing sets themselves and stop on large ones")
    add("--workers", type=int, help="worker processes of that sweep (default: $DANNLIB_WORKERS or one per core)")
    add("--normalize", action="store_true", help="execute nothing: rewrite the selected notebooks as JupyterLab would "
        "save them (this interpreter's kernelspec), so that opening one does not mark it modified")
    add("--partial", action="store_true", help="train nothing: render the runs the store holds so far (e.g. while a "
        "long sweep runs); each notebook says which runs are missing")


def run_from_args(args: argparse.Namespace) -> int:
    """The ``regenerate`` subcommand (exit statuses in ``_HELP``); a signal kills the kernels at once."""
    def on_signal(signum, _frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second signal waits for the short clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _kill_kernels()
        raise Interrupted(signum)

    runs: list[NotebookRun] = []
    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.normalize:
            folder = Path(args.notebooks_dir or PROJECT_ROOT / "notebooks").expanduser().resolve()
            selected = select_notebooks(find_notebooks(folder), parse_only(args.only))
            changed = [p.name for p in selected if normalize_notebook(p)]
            print(f"regenerate --normalize: {len(changed)} of {len(selected)} notebook(s) rewritten"
                  + (f": {', '.join(changed)}" if changed else ""))
            return 0
        regenerate(args.profile, args.only, args.notebooks_dir, args.figures_dir, args.results_dir, args.seeds,
                   args.data_root, progress=not args.no_progress, in_place=args.in_place, runs=runs,
                   sweep=not args.no_sweep, workers=args.workers, partial=args.partial)
    except KeyboardInterrupt as exc:
        done, stopped = ([r.notebook for r in runs if (r.status == "interrupted") == s] for s in (False, True))
        print(f"regenerate: interrupted by {_signal_name(exc)}" + (f" during {stopped[0]} (left as it was)" if stopped
              else "") + f"; {len(done)} notebook(s) finished before: {', '.join(done) or 'none'}", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except (ValueError, FileNotFoundError, PermissionError, ConnectionError) as exc:
        print(f"regenerate: error: {exc}", file=sys.stderr)
        return 2
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    width = max([8] + [len(r.notebook) for r in runs])
    print("\n".join([f"{'notebook':<{width}}  status   seconds"] + [
        f"{r.notebook:<{width}}  {r.status:<6}  {r.seconds:>8.1f}" + (f"  {r.error}" if r.error else "")
        + (f"  (kept as {r.failed_copy})" if r.failed_copy else "") for r in runs]))
    if failed := [r.notebook for r in runs if r.status != "ok"]:
        print(f"regenerate: {len(failed)} of {len(runs)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
