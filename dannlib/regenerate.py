"""Regenerate every figure: execute ``notebooks/NN_*.ipynb`` with papermill, one notebook
at a time, each as a transaction.

``python -m dannlib regenerate --profile quick`` runs each notebook, in number order, with
the kernel's working directory its notebooks folder and the kernel this interpreter
(``sys.executable``), not whatever ``python3`` kernelspec is installed elsewhere.

Parameters and environment. Papermill injects only ``profile`` (and ``seeds`` when given),
never a path, so an executed notebook holds no path of the machine that ran it and Run All
from any clone writes into that clone. Everything else reaches the kernel through its
environment (see ``KERNEL_ENV_DOC``): ``DANNLIB_FIGURES``/``DANNLIB_RESULTS`` name the
notebook's *staging* folders, ``DANNLIB_PROFILE`` the profile, ``DANNLIB_DATA`` the data
root of ``--data-root``, and ``DANNLIB_PROGRESS=0`` (with ``TQDM_DISABLE=1``) asks for no
progress bars, so none ends up in a saved notebook.

Transactions. A notebook writes its figures into ``<figures>/.staging-<pid>-NN_name/`` and
its records into ``<results>/.staging-<pid>-NN_name/`` (which starts as a copy of
``<results>/<profile>/``, so a notebook can read an earlier notebook's records and saved
networks), and the executed notebook into ``.NN_name.<pid>.running.ipynb``. Only when every
cell succeeded are they moved into place: each staged figure folder replaces its namesake
as a whole, each new or changed results file replaces its namesake (``os.replace``), then
the notebook. The moves are listed first in a journal (``.NN_name.<pid>.commit.json``
beside the executed notebook), so a commit cut short by SIGKILL is completed by the next
run. On a failure or an interruption the notebook, figures and records stay exactly as
they were; the partial execution of a failure is kept as ``.failed/NN_name.ipynb`` in the
folder of the executed notebooks. Later notebooks still run after a failure.

Profiles never overwrite each other's outputs: only ``COMMITTED_PROFILE`` ("quick", the
profile the committed notebooks carry) executes ``notebooks/`` in place and writes
``figures/``; another profile writes its executed notebooks to ``.tmp/<profile>/notebooks/``
and its figures to ``.tmp/<profile>/figures/`` (``.tmp`` beside the notebooks folder)
unless ``--in-place`` is given or ``--figures-dir``/``$DANNLIB_FIGURES`` names the
figures folder. Records always go to ``<results>/<profile>/``.

Saved notebooks are tidied: papermill's metadata keeps no path, paths in outputs that point
into the staging folders, the project or the data root are rewritten relative to the
notebooks folder (``$DANNLIB_DATA`` for the data root), stderr outputs that are exactly
known noise (tqdm's IProgress warning, progress-bar redraws, ipykernel's TCP warning) are
dropped, and the ``injected-parameters`` cell is tagged ``nbval-skip`` so that the test
suite's nbval run takes its settings from the environment.

Before any notebook starts, leftovers of killed runs (``.NN_name.*.running.ipynb``,
staging folders of processes that no longer exist) are removed, unfinished commits are
completed, and every output folder is checked for writability.

``<results>/<profile>/regeneration.json`` is rewritten (atomically) after each notebook and
on interruption: per notebook the last attempt (status ``ok``, ``failed`` or
``interrupted``, seconds, the kernel's peak resident memory) and, under ``last_ok``, the
last successful one, whose outputs are the ones in place.

SIGINT (Ctrl-C) and SIGTERM stop the run cleanly: the kernel is killed, the current
notebook's staging is removed, one summary line is printed and the exit status is 130
(SIGINT) or 143 (SIGTERM).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import filecmp
import json
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .profiles import DEFAULT_PROFILE, PROFILES, check_profile
from .utils import PROJECT_ROOT, atomic_write, machine_info

NOTEBOOK_NAME = re.compile(r"^(?P<number>\d{2})_.+\.ipynb$")
FAILED_DIRNAME = ".failed"
RUNNING_SUFFIX = ".running.ipynb"
JOURNAL_SUFFIX = ".commit.json"
STAGING_PREFIX = ".staging-"
CURRENT_ENV_KERNEL = "python3"  # the name papermill is given when no --kernel is asked for
REPORT_NAME = "regeneration.json"
TMP_DIRNAME = ".tmp"

# The profile the committed notebooks and figures/ carry: only it regenerates them in place.
COMMITTED_PROFILE = "quick"

# Set in the kernel's environment by regenerate (beside DANNLIB_FIGURES/RESULTS/PROFILE/DATA).
PROGRESS_ENV = "DANNLIB_PROGRESS"
KERNEL_ENV = {
    PROGRESS_ENV: "0",  # dannlib's progress helpers show no bar when it is "0"
    "TQDM_DISABLE": "1",  # tqdm >= 4.66 reads TQDM_* as defaults: disable=True for every bar
}
KERNEL_ENV_DOC = (
    "The kernel's environment: DANNLIB_FIGURES and DANNLIB_RESULTS (the notebook's staging "
    "folders), DANNLIB_PROFILE, DANNLIB_DATA (from --data-root, else as inherited), "
    f"{PROGRESS_ENV}=0 and TQDM_DISABLE=1 (no progress bars in saved notebooks)."
)

# stderr outputs that are exactly one of these (or only progress-bar redraws) are dropped.
KNOWN_STDERR_NOISE = (
    re.compile(r"\A[^\n]*TqdmWarning: IProgress not found\.[^\n]*\n(?:[ \t]+[^\n]*\n?)?\Z"),
    re.compile(r"\A[^\n]*Kernel is running over TCP without encryption\.[^\n]*\n?\Z"),
)
_PROGRESS_SEGMENT = re.compile(r"\d{1,3}%\|")

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}

# The kernel managers of the notebook now running: a signal handler kills their kernels at
# once, before the interruption unwinds papermill (which could otherwise still interrupt
# the kernel and leave it printing tracebacks while it dies).
_RUNNING_KERNELS: list = []


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class NotebookRun:
    """The outcome of executing one notebook."""

    notebook: str  # file stem, e.g. "03_dann_vs_source_only"
    status: str  # "ok", "failed" or "interrupted"
    seconds: float
    error: str | None = None  # "ExceptionName: message" of a failure
    failed_copy: str | None = None  # where the failed execution was kept (relative to the project)
    peak_rss_mib: float | None = None  # the kernel's peak resident memory (Linux), see _kernel_manager_class


@dataclass
class Outputs:
    """Where one regeneration writes."""

    notebooks: Path  # the executed notebooks
    figures: Path
    results: Path
    in_place: bool
    project: Path  # the notebooks folder's parent: .tmp/ lives there; paths are shown relative to it


# ----------------------------------------------------------------------------- selection


def find_notebooks(notebooks_dir: str | os.PathLike) -> list[Path]:
    """The notebooks ``NN_*.ipynb`` (two-digit prefix) in ``notebooks_dir``, in order."""
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebooks_dir {str(notebooks_dir)!r} is not a directory (option --notebooks-dir)")
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


# ----------------------------------------------------------------------------- output folders


def resolve_outputs(
    profile: str,
    notebooks_dir: Path,
    figures_dir=None,
    results_dir=None,
    in_place: bool = False,
) -> Outputs:
    """The folders a regeneration under ``profile`` writes to (see the module docstring).

    figures: ``figures_dir`` > $DANNLIB_FIGURES > ``figures/`` beside the notebooks folder
    (committed profile or ``in_place``) > ``.tmp/<profile>/figures``; results:
    ``results_dir`` > $DANNLIB_RESULTS > the project's ``results/``."""
    project = notebooks_dir.parent
    in_place = bool(in_place) or profile == COMMITTED_PROFILE
    scratch = project / TMP_DIRNAME / profile
    chosen_figures = figures_dir if figures_dir is not None else os.environ.get("DANNLIB_FIGURES") or None
    if chosen_figures is not None:
        figures = Path(chosen_figures).expanduser().resolve()
    else:
        figures = (PROJECT_ROOT / "figures") if in_place else scratch / "figures"
    chosen_results = results_dir if results_dir is not None else os.environ.get("DANNLIB_RESULTS") or None
    results = Path(chosen_results).expanduser().resolve() if chosen_results else PROJECT_ROOT / "results"
    notebooks = notebooks_dir if in_place else scratch / "notebooks"
    return Outputs(notebooks=notebooks, figures=figures, results=results, in_place=in_place, project=project)


def check_writable(folder: str | os.PathLike, how_to_change: str) -> None:
    """Raise PermissionError naming ``folder`` and ``how_to_change`` (the option or
    environment variable that picks it) unless files can be created in it (or, where it
    does not exist yet, in the nearest existing folder above it, through which it would be
    created). Tries a real file, so a read-only file system counts too."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise PermissionError(
            f"output folder {folder} cannot be created: {probe} is not a folder; change it with {how_to_change}"
        )
    try:
        fd, name = tempfile.mkstemp(prefix=".write-test-", dir=probe)
    except OSError as exc:
        raise PermissionError(
            f"output folder {folder} is not writable ({probe}: {exc.strerror or exc}); change it with {how_to_change}"
        ) from None
    os.close(fd)
    os.unlink(name)


def check_outputs_writable(outputs: Outputs) -> None:
    """:func:`check_writable` on the three output folders, each named with its option."""
    check_writable(outputs.notebooks, "--notebooks-dir (or, for a profile other than "
                   f"{COMMITTED_PROFILE!r} without --in-place, the folder {TMP_DIRNAME}/ beside the notebooks)")
    check_writable(outputs.figures, "--figures-dir or $DANNLIB_FIGURES")
    check_writable(outputs.results, "--results-dir or $DANNLIB_RESULTS")


# ----------------------------------------------------------------------------- stale leftovers


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _owner_pid(name: str, pattern: re.Pattern) -> int | None:
    m = pattern.match(name)
    return int(m["pid"]) if m and m["pid"] and m["pid"].isdigit() else None


_RUNNING = re.compile(r"^\.(?P<stem>\d{2}_.+?)\.(?P<pid>[^.]+)" + re.escape(RUNNING_SUFFIX) + "$")
_JOURNAL = re.compile(r"^\.(?P<stem>\d{2}_.+?)\.(?P<pid>\d+)" + re.escape(JOURNAL_SUFFIX) + "$")
_STAGING = re.compile(r"^" + re.escape(STAGING_PREFIX) + r"(?P<pid>\d+)-.+$")


def _is_stale(name: str, pattern: re.Pattern) -> bool:
    if not pattern.match(name):
        return False
    pid = _owner_pid(name, pattern)
    return pid is None or not _pid_alive(pid)  # no pid in the name: an older version's leftover


def clean_stale(notebook_dirs: Sequence[Path], staging_parents: Sequence[Path]) -> list[Path]:
    """Complete the commits that a killed run left unfinished, then remove the executed-
    notebook temporaries and staging folders of processes that no longer exist. Returns
    what was removed or completed."""
    done = []
    for folder in dict.fromkeys(notebook_dirs):
        if not folder.is_dir():
            continue
        for journal in sorted(folder.iterdir()):
            if _is_stale(journal.name, _JOURNAL):
                with contextlib.suppress(ValueError, OSError):
                    _apply_commit(json.loads(journal.read_text()))
                journal.unlink(missing_ok=True)
                done.append(journal)
        for running in sorted(folder.iterdir()):
            if _is_stale(running.name, _RUNNING):
                running.unlink(missing_ok=True)
                done.append(running)
    for parent in dict.fromkeys(staging_parents):
        if not parent.is_dir():
            continue
        for staging in sorted(parent.iterdir()):
            if staging.is_dir() and _is_stale(staging.name, _STAGING):
                shutil.rmtree(staging, ignore_errors=True)
                done.append(staging)
    return done


# ----------------------------------------------------------------------------- commit


def _apply_commit(plan: dict) -> None:
    """Move a successful notebook's staged outputs into place. Idempotent: each step is
    skipped when its source is gone, so a journal can be replayed after a crash."""
    for src, dst in plan.get("files", []):
        if os.path.lexists(src):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
    for src, dst, trash in plan.get("folders", []):
        if os.path.lexists(src):
            if os.path.lexists(dst):
                if os.path.lexists(trash):
                    shutil.rmtree(trash, ignore_errors=True)
                os.rename(dst, trash)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.rename(src, dst)
    src, dst = plan["notebook"]
    if os.path.lexists(src):
        os.replace(src, dst)
    for staging in plan.get("cleanup", []):
        shutil.rmtree(staging, ignore_errors=True)


def _plan_commit(executed: Path, target: Path, fig_stage: Path, figures: Path,
                 res_stage: Path, results: Path) -> dict:
    folders, files = [], []
    for entry in sorted(fig_stage.iterdir()) if fig_stage.is_dir() else []:
        if entry.name.startswith(".replaced-"):
            continue
        if entry.is_dir():
            folders.append([str(entry), str(figures / entry.name), str(fig_stage / f".replaced-{entry.name}")])
        else:
            files.append([str(entry), str(figures / entry.name)])
    for root, _dirs, names in os.walk(res_stage):
        for name in sorted(names):
            src = Path(root, name)
            dst = results / src.relative_to(res_stage)
            if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
                continue  # the copy made for reading, unchanged
            files.append([str(src), str(dst)])
    return {"notebook": [str(executed), str(target)], "files": files, "folders": folders,
            "cleanup": [str(fig_stage), str(res_stage)]}


def _shadow_results(results: Path, profile: str, res_stage: Path) -> None:
    """Copy ``results/profile/`` into the staging folder so that a notebook reads the
    records and networks of earlier notebooks (staging folders and the report left out)."""
    source = results / profile
    if not source.is_dir():
        return

    def ignore(folder, names):
        return [n for n in names if n.startswith(STAGING_PREFIX) or n == REPORT_NAME or n.startswith(".")]

    shutil.copytree(source, res_stage / profile, ignore=ignore, copy_function=shutil.copy2, dirs_exist_ok=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while the block runs (they are delivered after it)."""
    mask = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, mask)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ----------------------------------------------------------------------------- execution


def _kernel_manager_class(current_env: bool, peaks: list, env: dict, started: list):
    """A jupyter kernel manager that records the kernel's peak memory, adds ``env`` to the
    kernel's environment, encrypts the kernel's sockets and, when ``current_env``, makes
    the ``python3`` kernel this interpreter.

    Papermill looks ``python3`` up among the installed kernelspecs, and a user-level one
    (``~/.local/share/jupyter/kernels/python3``) or one on ``$JUPYTER_PATH`` wins over the
    virtual environment's, so it may start a different Python. With ``current_env`` this
    manager answers ``python3`` with ipykernel's own spec for ``sys.executable`` (the
    approach of nbval's ``--nbval-current-env``).

    CurveZMQ transport encryption (where pyzmq has it and the kernelspec declares it) keeps
    ipykernel from warning that the kernel runs over TCP in plain text.

    Just before the kernel is shut down, its peak resident set (``VmHWM`` in
    ``/proc/<pid>/status``, Linux only) is appended to ``peaks`` in MiB.
    (``getrusage(RUSAGE_CHILDREN)`` would not do: a forked child starts with the parent's
    resident set, so it reports this process's own memory, torch included.) Each manager
    is appended to ``started`` so that an interruption can kill its kernel."""
    import ipykernel.kernelspec
    import zmq
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
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)
            if zmq.has("curve") and "transport_encryption" in self.trait_names():
                self.transport_encryption = "auto"

        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self):
            return CurrentEnvKernelSpecManager(data_dir=self.data_dir)

        async def _async_pre_start_kernel(self, **kw):
            kw["env"] = {**os.environ, **kw.get("env", {}), **env}
            return await super()._async_pre_start_kernel(**kw)

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            peak = _peak_rss_mib(getattr(self.provisioner, "pid", None))
            if peak is not None:
                peaks.append(peak)
            await super().shutdown_kernel(now=now, restart=restart)

    return DannlibKernelManager


def _kill_kernels(managers: Sequence) -> None:
    """SIGKILL the kernels this process started (their own process groups) and remove their
    connection files; for an interruption, when papermill cannot shut them down itself."""
    for km in managers:
        if getattr(km, "_dannlib_killed", False):
            continue
        km._dannlib_killed = True
        provisioner = getattr(km, "provisioner", None)
        pid, pgid = getattr(provisioner, "pid", None), getattr(provisioner, "pgid", None)
        with contextlib.suppress(OSError):
            if pgid and pgid != os.getpgid(0):
                os.killpg(pgid, signal.SIGKILL)
            elif pid:
                os.kill(pid, signal.SIGKILL)
        process = getattr(provisioner, "process", None)
        if process is not None:
            with contextlib.suppress(Exception):
                process.wait()
        connection_file = getattr(km, "connection_file", None)
        if connection_file:
            with contextlib.suppress(OSError):
                os.unlink(connection_file)


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


# ----------------------------------------------------------------------------- tidying notebooks


def path_replacements(pairs: Sequence[tuple[str | os.PathLike, str]]) -> list[tuple[re.Pattern, str]]:
    """Compiled (absolute path prefix -> replacement) rules, longest prefix first; a prefix
    matches only up to a path boundary (so ``/a/results`` leaves ``/a/results2`` alone)."""
    rules = {}
    for prefix, replacement in pairs:
        prefix = str(prefix).rstrip("/")
        if prefix and os.path.isabs(prefix) and prefix != "/":
            rules[prefix] = replacement
    return [(re.compile(re.escape(p) + r"(?![\w.-])"), r) for p, r in sorted(rules.items(), key=lambda kv: -len(kv[0]))]


def scrub_text(text: str, rules: Sequence[tuple[re.Pattern, str]]) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(lambda _m, r=replacement: r, text)
    return text


def is_known_stderr_noise(text: str) -> bool:
    """True for a stderr output that is only a known warning or progress-bar redraws."""
    if any(p.match(text) for p in KNOWN_STDERR_NOISE):
        return True
    segments = [s for s in re.split(r"[\r\n]", text) if s.strip()]
    return not segments or all(_PROGRESS_SEGMENT.search(s) for s in segments) and "\r" in text


def tidy_notebook(nb, name: str, parameters: dict, rules: Sequence[tuple[re.Pattern, str]]) -> None:
    """In place: papermill's metadata without paths, paths in outputs rewritten by
    ``rules``, known stderr noise dropped, the injected cell tagged ``nbval-skip``."""
    papermill_meta = nb.metadata.setdefault("papermill", {})
    papermill_meta["input_path"] = name
    papermill_meta["output_path"] = name
    papermill_meta["parameters"] = dict(parameters)
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        if "injected-parameters" in tags and "nbval-skip" not in tags:
            cell.metadata["tags"] = tags + ["nbval-skip"]
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            if out.get("output_type") == "stream" and out.get("name") == "stderr" and is_known_stderr_noise(out.get("text", "")):
                continue
            if "text" in out:
                out["text"] = scrub_text(out["text"], rules)
            data = out.get("data", {})
            for mime in ("text/plain", "text/markdown", "text/html"):
                if isinstance(data.get(mime), str):
                    data[mime] = scrub_text(data[mime], rules)
            if "evalue" in out:
                out["evalue"] = scrub_text(out["evalue"], rules)
            if "traceback" in out:
                out["traceback"] = [scrub_text(t, rules) for t in out["traceback"]]
            kept.append(out)
        cell.outputs = kept


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def _display(path: str | os.PathLike, project: Path) -> str:
    """``path`` relative to the project when inside it, else only its last two parts: no
    machine path goes into a report."""
    path = Path(path)
    try:
        return path.relative_to(project).as_posix() or "."
    except ValueError:
        return "…/" + "/".join(path.parts[-2:])


# ----------------------------------------------------------------------------- one notebook


def run_notebook(
    path: str | os.PathLike,
    parameters: dict,
    outputs: Outputs,
    profile: str,
    kernel_name: str | None = None,
    progress: bool = True,
    data_root: Path | None = None,
) -> tuple[NotebookRun, dict | None]:
    """Execute one notebook with papermill (cwd = its folder) into staging; never raises for
    a failure inside the notebook, which is reported in the returned :class:`NotebookRun`.
    Returns the run and, on success, the commit plan (see :func:`_apply_commit`) that moves
    its outputs into place; raises :class:`Interrupted` (after cleaning up) on a signal.

    ``kernel_name`` None: this interpreter; otherwise an installed kernelspec's name."""
    import nbformat
    import papermill

    path = Path(path).resolve()
    tag = f"{os.getpid()}-{path.stem}"
    target = outputs.notebooks / path.name
    outputs.notebooks.mkdir(parents=True, exist_ok=True)
    executed = outputs.notebooks / f".{path.stem}.{os.getpid()}{RUNNING_SUFFIX}"
    fig_stage = outputs.figures / f"{STAGING_PREFIX}{tag}"
    res_stage = outputs.results / f"{STAGING_PREFIX}{tag}"
    env = {**KERNEL_ENV, "DANNLIB_FIGURES": str(fig_stage), "DANNLIB_RESULTS": str(res_stage),
           "DANNLIB_PROFILE": profile, "DANNLIB_STORE": str(store_root(outputs))}
    if data_root is not None:
        env["DANNLIB_DATA"] = str(data_root)
    peaks: list[float] = []
    managers = _RUNNING_KERNELS
    managers.clear()
    kernel_manager_class = _kernel_manager_class(kernel_name is None, peaks, env, managers)
    progress_bar = {"desc": path.stem, "position": 1, "leave": False} if progress else False
    start = time.perf_counter()
    run = NotebookRun(notebook=path.stem, status="ok", seconds=0.0)
    plan = None

    def discard():
        shutil.rmtree(fig_stage, ignore_errors=True)
        shutil.rmtree(res_stage, ignore_errors=True)
        executed.unlink(missing_ok=True)

    try:
        for stage in (fig_stage, res_stage):
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir(parents=True)
        _shadow_results(outputs.results, profile, res_stage)
        papermill.execute_notebook(
            str(path),
            str(executed),
            parameters=parameters,
            kernel_name=kernel_name or CURRENT_ENV_KERNEL,
            cwd=str(path.parent),
            progress_bar=progress_bar,
            kernel_manager_class=kernel_manager_class,
        )
        data = env.get("DANNLIB_DATA") or os.environ.get("DANNLIB_DATA")
        rules = path_replacements([
            (fig_stage, _rel(outputs.figures, path.parent)),
            (res_stage, _rel(outputs.results, path.parent)),
            (outputs.project, _rel(outputs.project, path.parent)),
            (PROJECT_ROOT, _rel(PROJECT_ROOT, path.parent)),
            *([(data, "$DANNLIB_DATA")] if data else []),
            (Path.home(), "~"),
        ])
        nb = nbformat.read(executed, as_version=4)
        tidy_notebook(nb, path.name, parameters, rules)
        nbformat.write(nb, str(executed))
        os.chmod(executed, stat.S_IMODE((target if target.exists() else path).stat().st_mode))
        plan = _plan_commit(executed, target, fig_stage, outputs.figures, res_stage, outputs.results)
    except KeyboardInterrupt:
        _kill_kernels(managers)
        discard()
        raise
    except Exception as exc:  # a failing notebook must not stop the others
        run.status, run.error = "failed", _describe_error(exc)
        if executed.exists() and executed.stat().st_size > 0:  # papermill saved the partial execution
            failed = outputs.notebooks / FAILED_DIRNAME / path.name
            failed.parent.mkdir(exist_ok=True)
            os.chmod(executed, stat.S_IMODE(path.stat().st_mode))
            os.replace(executed, failed)
            run.failed_copy = _display(failed, outputs.project)
        discard()
    finally:
        run.seconds = round(time.perf_counter() - start, 2)
    if peaks:
        run.peak_rss_mib = round(max(peaks), 1)
    return run, plan


def commit(plan: dict, journal_dir: Path, stem: str) -> None:
    """Apply ``plan`` after writing it as a journal that the next run replays if this
    process dies half-way (see :func:`clean_stale`)."""
    journal = journal_dir / f".{stem}.{os.getpid()}{JOURNAL_SUFFIX}"
    with atomic_write(journal) as fh:
        json.dump(plan, fh)
    _apply_commit(plan)
    journal.unlink(missing_ok=True)


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
) -> list[NotebookRun]:
    """Execute the selected notebooks in order under ``profile`` and keep the report.

    Defaults: ``profile`` $DANNLIB_PROFILE else "quick"; ``notebooks_dir`` the project's
    ``notebooks/``; output folders as :func:`resolve_outputs`. ``seeds`` is injected only
    when given, ``data_root`` reaches the kernel as $DANNLIB_DATA. Raises ValueError for an
    unknown profile, a bad ``only`` or ``seeds``, FileNotFoundError for a missing notebooks
    folder, PermissionError for an output folder that cannot be written, and
    :class:`Interrupted` (a KeyboardInterrupt) when interrupted, after recording it.
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
    check_outputs_writable(outputs)
    clean_stale([notebooks_dir, outputs.notebooks], [outputs.figures, outputs.results])

    parameters = {"profile": profile}
    if seeds is not None:
        parameters["seeds"] = seeds

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
                                         progress=progress, data_root=data_root)
            except KeyboardInterrupt as exc:
                signum = getattr(exc, "signum", signal.SIGINT)
                with _signals_deferred():
                    runs.append(NotebookRun(path.stem, "interrupted", round(time.perf_counter() - start, 2),
                                            error=f"interrupted by {signal.Signals(signum).name}"))
                    report.write(runs, interrupted=signal.Signals(signum).name)
                raise
            with _signals_deferred():  # a signal now waits until the notebook is in place and recorded
                if plan is not None:
                    commit(plan, outputs.notebooks, path.stem)
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


def store_root(outputs) -> Path:
    """The run store the notebooks read: $DANNLIB_STORE, else ``<results>/runs``."""
    return Path(os.environ.get("DANNLIB_STORE") or outputs.results / "runs")


def run_sweep(selected, profile, seeds, outputs, data_root, workers, progress) -> dict:
    """Train the runs the selected notebooks need (:func:`dannlib.sweep.ensure`, worker
    processes, a progress bar over the runs) before any notebook starts, so the notebooks
    only render. Returns the sweep's summary for the report."""
    from .plan import NOTEBOOKS, plan_specs
    from .store import Store
    from .sweep import ensure

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
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            old = json.loads(path.read_text())
            if isinstance(old, dict) and old.get("profile") == profile:
                report["notebooks"].update(old.get("notebooks", {}))
                report["runs"].update(old.get("runs", {}))
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
    try:
        with _clean_signals():
            regenerate(
                profile=args.profile, only=args.only, notebooks_dir=args.notebooks_dir,
                figures_dir=args.figures_dir, results_dir=args.results_dir, seeds=args.seeds,
                data_root=args.data_root, kernel=args.kernel, progress=not args.no_progress,
                in_place=getattr(args, "in_place", False), runs=runs, sweep=not getattr(args, "no_sweep", False),
                workers=getattr(args, "workers", None),
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
