"""Constants, data classes, notebook selection and output folders of the regeneration."""
from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..settings import check_writable  # noqa: F401  (re-exported: regenerate.check_writable)
from ..utils import PROJECT_ROOT



NOTEBOOK_NAME = re.compile(r"^(?P<number>\d{2})_.+\.ipynb$")
FAILED_DIRNAME = ".failed"
RUNNING_SUFFIX = ".running.ipynb"
JOURNAL_SUFFIX = ".commit.json"
STAGING_PREFIX = ".staging-"
RUN_LOCK_PREFIX = ".regenerate-"  # + run id + RUN_LOCK_SUFFIX: held (flock) for a regeneration's life
RUN_LOCK_SUFFIX = ".lock"
CURRENT_ENV_KERNEL = "python3"  # the name papermill is given when no --kernel is asked for
REPORT_NAME = "regeneration.json"
TMP_DIRNAME = ".tmp"

# The profile the committed notebooks and figures/ carry: only it regenerates them in place.
COMMITTED_PROFILE = "paper"

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

    def __reduce__(self):  # rebuilt from the signal number, not from the name in args
        return type(self), (self.signum,)


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


def check_outputs_writable(outputs: Outputs, store: bool = True) -> None:
    """:func:`~dannlib.settings.check_writable` on the three output folders and (``store``:
    unless nothing is trained) the run store, each named with its option."""
    check_writable(outputs.notebooks, "--notebooks-dir (or, for a profile other than "
                   f"{COMMITTED_PROFILE!r} without --in-place, the folder {TMP_DIRNAME}/ beside the notebooks)")
    check_writable(outputs.figures, "--figures-dir or $DANNLIB_FIGURES")
    check_writable(outputs.results, "--results-dir or $DANNLIB_RESULTS")
    if store:
        check_writable(store_root(outputs), "$DANNLIB_STORE (default: <results>/runs)")


def store_root(outputs) -> Path:
    """The run store the notebooks read: $DANNLIB_STORE, else ``<results>/runs``."""
    return Path(os.environ.get("DANNLIB_STORE") or outputs.results / "runs")
