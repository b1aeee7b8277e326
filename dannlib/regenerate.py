"""Regenerate every figure: execute ``notebooks/NN_*.ipynb`` in place with papermill.

``python -m dannlib regenerate --profile quick`` runs each notebook, in number order, with
the papermill parameters ``profile``, ``figures_dir`` and ``results_dir`` (absolute paths),
plus ``seeds`` and ``data_root`` when they are given. The kernel's working directory is the
notebooks folder, and the kernel is this interpreter (``sys.executable``), not whatever
``python3`` kernelspec happens to be installed elsewhere.

A notebook runs into a temporary file beside it and replaces the original only when every
cell succeeded. On failure the original notebook stays byte for byte as it was, and the
partial execution is kept as ``notebooks/.failed/NN_name.ipynb`` for debugging. Later
notebooks still run; the summary names the failures and the exit status is non-zero.

Executed notebooks keep papermill's ``injected-parameters`` cell (so the committed notebook
shows what ran, in linear order), tagged ``nbval-skip`` so that the test suite's nbval run
takes its settings from ``DANNLIB_PROFILE``/``DANNLIB_FIGURES``/``DANNLIB_RESULTS`` instead
of the injected values.

Each run updates ``results/<profile>/regeneration.json``: per notebook, its status, seconds
and the kernel's peak resident memory where measurable, with the machine that ran it.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import re
import stat
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .profiles import DEFAULT_PROFILE, PROFILES, check_profile
from .utils import PROJECT_ROOT, atomic_write, machine_info

NOTEBOOK_NAME = re.compile(r"^(?P<number>\d{2})_.+\.ipynb$")
FAILED_DIRNAME = ".failed"
RUNNING_SUFFIX = ".running.ipynb"
CURRENT_ENV_KERNEL = "python3"  # the name papermill is given when no --kernel is asked for
REPORT_NAME = "regeneration.json"


@dataclass
class NotebookRun:
    """The outcome of executing one notebook."""

    notebook: str  # file stem, e.g. "03_dann_vs_source_only"
    status: str  # "ok" or "failed"
    seconds: float
    error: str | None = None  # "ExceptionName: message" of a failure
    failed_copy: str | None = None  # where the failed execution was kept
    peak_rss_mib: float | None = None  # the kernel's peak resident memory (Linux), see _kernel_manager_class


# ----------------------------------------------------------------------------- selection


def find_notebooks(notebooks_dir: str | os.PathLike) -> list[Path]:
    """The notebooks ``NN_*.ipynb`` (two-digit prefix) in ``notebooks_dir``, in order."""
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebooks_dir {str(notebooks_dir)!r} is not a directory")
    return sorted(p for p in notebooks_dir.iterdir() if p.is_file() and NOTEBOOK_NAME.match(p.name))


def parse_only(text: str | Sequence[str] | None) -> list[str] | None:
    """``"01,3"`` -> ``["01", "03"]``; None or empty -> None (all notebooks)."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    numbers = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if not item.isdigit() or len(item) > 2:
            raise ValueError(f"only: {item!r} is not a notebook number (two digits, e.g. 01,03)")
        numbers.append(item.zfill(2))
    return numbers or None


def parse_seeds(text: str | Sequence[int] | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]``; None -> None (each notebook's profile default)."""
    if text is None:
        return None
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    try:
        seeds = [int(s) for s in items if s != ""]
    except (TypeError, ValueError):
        raise ValueError(f"seeds must be comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    if not seeds:
        raise ValueError(f"seeds must name at least one integer seed, got {text!r}")
    return seeds


def select_notebooks(notebooks: Sequence[Path], only: Sequence[str] | None) -> list[Path]:
    """The notebooks whose number prefix is in ``only`` (all when ``only`` is None).

    Raises ValueError naming the available numbers when a requested number has no notebook."""
    if only is None:
        return list(notebooks)
    available = sorted({NOTEBOOK_NAME.match(p.name)["number"] for p in notebooks})
    unknown = [n for n in only if n not in available]
    if unknown:
        raise ValueError(
            f"unknown notebook number(s) for only: {', '.join(unknown)}; "
            f"available: {', '.join(available) or '(no notebooks)'}"
        )
    wanted = set(only)
    return [p for p in notebooks if NOTEBOOK_NAME.match(p.name)["number"] in wanted]


# ----------------------------------------------------------------------------- execution


def _kernel_manager_class(current_env: bool, peaks: list):
    """A jupyter kernel manager that records the kernel's peak memory and, when
    ``current_env``, makes the ``python3`` kernel this interpreter.

    Papermill looks ``python3`` up among the installed kernelspecs, and a user-level one
    (``~/.local/share/jupyter/kernels/python3``) or one on ``$JUPYTER_PATH`` wins over the
    virtual environment's, so it may start a different Python. With ``current_env`` this
    manager answers ``python3`` with ipykernel's own spec for ``sys.executable`` (the
    approach of nbval's ``--nbval-current-env``).

    Just before the kernel is shut down, its peak resident set (``VmHWM`` in
    ``/proc/<pid>/status``, Linux only) is appended to ``peaks`` in MiB.
    (``getrusage(RUSAGE_CHILDREN)`` would not do: a forked child starts with the parent's
    resident set, so it reports this process's own memory, torch included.)"""
    import ipykernel.kernelspec
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from traitlets import default

    class CurrentEnvKernelSpecManager(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            if current_env and kernel_name == CURRENT_ENV_KERNEL:
                return self.kernel_spec_class(
                    resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict()
                )
            return super().get_kernel_spec(kernel_name)

    class DannlibKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self):
            return CurrentEnvKernelSpecManager(data_dir=self.data_dir)

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            peak = _peak_rss_mib(getattr(self.provisioner, "pid", None))
            if peak is not None:
                peaks.append(peak)
            await super().shutdown_kernel(now=now, restart=restart)

    return DannlibKernelManager


def _peak_rss_mib(pid: int | None) -> float | None:
    """Peak resident set size of process ``pid`` in MiB (Linux ``VmHWM``), else None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _describe_error(exc: BaseException) -> str:
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename is not None:  # papermill.PapermillExecutionError: the notebook's own exception
        where = f"cell [{exc.exec_count}] " if getattr(exc, "exec_count", None) else ""
        return f"{where}{ename}: {evalue}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _finalize(executed: Path, target: Path) -> None:
    """Tidy the executed notebook and rename it over ``target`` (atomic, same folder)."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    papermill_meta = nb.metadata.setdefault("papermill", {})
    # Record the notebook's own name rather than the temporary file or a machine's paths.
    papermill_meta["input_path"] = target.name
    papermill_meta["output_path"] = target.name
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        if "injected-parameters" in tags and "nbval-skip" not in tags:
            cell.metadata["tags"] = tags + ["nbval-skip"]
    nbformat.write(nb, str(executed))
    os.chmod(executed, stat.S_IMODE(target.stat().st_mode))  # mkstemp made it 0600
    os.replace(executed, target)


def run_notebook(
    path: str | os.PathLike,
    parameters: dict,
    kernel_name: str | None = None,
    progress: bool = True,
) -> NotebookRun:
    """Execute one notebook in place with papermill (cwd = its folder); never raises for a
    failure inside the notebook, which is reported in the returned :class:`NotebookRun`.

    ``kernel_name`` None: this interpreter; otherwise an installed kernelspec's name."""
    import papermill

    path = Path(path).resolve()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=RUNNING_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    peaks: list[float] = []
    kernel_manager_class = _kernel_manager_class(current_env=kernel_name is None, peaks=peaks)
    progress_bar = {"desc": path.stem, "position": 1, "leave": False} if progress else False
    start = time.perf_counter()
    run = NotebookRun(notebook=path.stem, status="ok", seconds=0.0)
    try:
        papermill.execute_notebook(
            str(path),
            str(tmp),
            parameters=parameters,
            kernel_name=kernel_name or CURRENT_ENV_KERNEL,
            cwd=str(path.parent),
            progress_bar=progress_bar,
            kernel_manager_class=kernel_manager_class,
        )
        _finalize(tmp, path)
    except Exception as exc:  # a failing notebook must not stop the others
        run.status, run.error = "failed", _describe_error(exc)
        if tmp.exists() and tmp.stat().st_size > 0:  # papermill saved the partial execution
            failed = path.parent / FAILED_DIRNAME / path.name
            failed.parent.mkdir(exist_ok=True)
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
            os.replace(tmp, failed)
            run.failed_copy = str(failed)
    finally:
        run.seconds = round(time.perf_counter() - start, 2)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if peaks:
        run.peak_rss_mib = round(max(peaks), 1)
    return run


def _resolve_dir(value, env_var: str, default: Path) -> Path:
    """argument > $env_var > default, as an absolute path (relative ones: to the cwd)."""
    chosen = value if value is not None else os.environ.get(env_var) or default
    return Path(chosen).expanduser().resolve()


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
) -> list[NotebookRun]:
    """Execute the selected notebooks in order under ``profile`` and write the report.

    Defaults: ``profile`` $DANNLIB_PROFILE else "quick"; ``notebooks_dir`` the project's
    ``notebooks/``; ``figures_dir``/``results_dir`` $DANNLIB_FIGURES/$DANNLIB_RESULTS else
    the project's ``figures/``/``results/``. ``seeds`` and ``data_root`` are passed to the
    notebooks only when given. Raises ValueError for an unknown profile, a bad ``only``
    or ``seeds``; returns one :class:`NotebookRun` per executed notebook."""
    profile = check_profile(profile if profile is not None else os.environ.get("DANNLIB_PROFILE", DEFAULT_PROFILE))
    only = parse_only(only)
    seeds = parse_seeds(seeds)
    notebooks_dir = Path(notebooks_dir).resolve() if notebooks_dir is not None else PROJECT_ROOT / "notebooks"
    figures_dir = _resolve_dir(figures_dir, "DANNLIB_FIGURES", PROJECT_ROOT / "figures")
    results_dir = _resolve_dir(results_dir, "DANNLIB_RESULTS", PROJECT_ROOT / "results")
    notebooks = find_notebooks(notebooks_dir)
    if not notebooks:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {notebooks_dir}")
    selected = select_notebooks(notebooks, only)

    parameters = {"profile": profile, "figures_dir": str(figures_dir), "results_dir": str(results_dir)}
    if seeds is not None:
        parameters["seeds"] = seeds
    if data_root is not None:
        parameters["data_root"] = str(Path(data_root).expanduser().resolve())

    from tqdm.auto import tqdm

    started_at = _now()
    runs = []
    bar = tqdm(selected, desc=f"regenerate ({profile})", unit="notebook", position=0, disable=not progress)
    for path in bar:
        bar.set_postfix_str(path.stem)
        run = run_notebook(path, parameters, kernel_name=kernel, progress=progress)
        runs.append(run)
        if run.status != "ok":
            tqdm.write(f"FAILED {run.notebook}: {run.error}", file=sys.stderr)
    bar.close()
    write_report(results_dir, profile, runs, started_at=started_at, parameters=parameters, kernel=kernel)
    return runs


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_report(results_dir, profile: str, runs: Sequence[NotebookRun], started_at: str, parameters: dict, kernel) -> Path:
    """Update ``results_dir/profile/regeneration.json`` (atomically) with ``runs``.

    Entries of notebooks not in ``runs`` are kept (e.g. after ``--only``), each pointing
    at the run that produced it; ``runs`` lists the runs still referenced, with their
    machine. ``peak_rss_mib`` is the peak resident set of the notebook's kernel process
    (Linux ``VmHWM``; null where not measurable; DataLoader workers not included)."""
    path = Path(results_dir) / profile / REPORT_NAME
    report = {"profile": profile, "notebooks": {}, "runs": {}}
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            old = json.loads(path.read_text())
            if isinstance(old, dict) and old.get("profile") == profile:
                report["notebooks"].update(old.get("notebooks", {}))
                report["runs"].update(old.get("runs", {}))
    report["runs"][started_at] = {
        "started_at": started_at,
        "finished_at": _now(),
        "kernel": kernel or f"{CURRENT_ENV_KERNEL} ({sys.executable})",
        "parameters": parameters,
        "machine": machine_info(),
    }
    for run in runs:
        report["notebooks"][run.notebook] = {**asdict(run), "run": started_at}
    used = {entry.get("run") for entry in report["notebooks"].values()}
    report["runs"] = {k: v for k, v in report["runs"].items() if k in used}
    report["notebooks"] = dict(sorted(report["notebooks"].items()))
    with atomic_write(path) as fh:
        json.dump(report, fh, indent=2, sort_keys=False)
        fh.write("\n")
    return path


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", default=None,
        help=f"one of {', '.join(PROFILES)} (default: $DANNLIB_PROFILE, else {DEFAULT_PROFILE})",
    )
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03 (default: all)")
    parser.add_argument("--notebooks-dir", default=None, help="folder of NN_*.ipynb (default: the project's notebooks/)")
    parser.add_argument("--figures-dir", default=None, help="default: $DANNLIB_FIGURES, else the project's figures/")
    parser.add_argument("--results-dir", default=None, help="default: $DANNLIB_RESULTS, else the project's results/")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2 (default: each profile's)")
    parser.add_argument("--data-root", default=None, help="data root (default: the notebooks use $DANNLIB_DATA, else data/)")
    parser.add_argument(
        "--kernel", default=None,
        help="an installed jupyter kernelspec name (default: this interpreter, %s)" % sys.executable,
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    """The ``regenerate`` subcommand: 0 all succeeded, 1 some notebook failed, 2 bad input."""
    try:
        runs = regenerate(
            profile=args.profile, only=args.only, notebooks_dir=args.notebooks_dir,
            figures_dir=args.figures_dir, results_dir=args.results_dir, seeds=args.seeds,
            data_root=args.data_root, kernel=args.kernel, progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"regenerate: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(runs))
    failed = [r.notebook for r in runs if r.status != "ok"]
    if failed:
        print(f"regenerate: {len(failed)} of {len(runs)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
