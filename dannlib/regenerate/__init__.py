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

Transactions. Each regeneration has a run id, ``<pid>-<16 random hex digits>`` (a pid alone
is reused, e.g. by a container restarted in a fresh PID namespace), and holds a lock file
``.regenerate-<run id>.lock`` in each output folder (``fcntl.flock``, for its whole life:
the kernel releases it when the process dies, however it dies). A notebook writes its
figures into ``<figures>/.staging-<run id>-NN_name/`` and its records into
``<results>/.staging-<run id>-NN_name/`` (which starts as a copy of
``<results>/<profile>/``, so a notebook can read an earlier notebook's records and saved
networks), and the executed notebook into ``.NN_name.<run id>.running.ipynb``. Only when
every cell succeeded are they moved into place: each staged figure folder replaces its
namesake as a whole, each new or changed results file replaces its namesake
(``os.replace``), then the notebook. The moves are listed first in a journal
(``.NN_name.<run id>.commit.json`` beside the executed notebook), so a commit cut short by
SIGKILL is completed by the next run. On a failure or an interruption the notebook, figures and records stay exactly as
they were; the partial execution of a failure is kept as ``.failed/NN_name.ipynb`` in the
folder of the executed notebooks. Later notebooks still run after a failure.

Profiles never overwrite each other's outputs: only ``COMMITTED_PROFILE`` ("paper", the
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

Before any notebook starts, every output folder (the run store too, unless ``--partial``)
and every setting is checked, then the leftovers of killed runs -- those whose lock nobody
holds, whatever pid they name, and an older version's pid-only names -- are handled:
unfinished commits are completed, executed-notebook temporaries, staging folders and lock
files removed.

``<results>/<profile>/regeneration.json`` is rewritten (atomically) after each notebook and
on interruption: per notebook the last attempt (status ``ok``, ``failed`` or
``interrupted``, seconds, the kernel's peak resident memory) and, under ``last_ok``, the
last successful one, whose outputs are the ones in place.

SIGINT (Ctrl-C) and SIGTERM stop the run cleanly: the kernel is killed, the current
notebook's staging is removed, one summary line is printed and the exit status is 130
(SIGINT) or 143 (SIGTERM).
"""
from __future__ import annotations

import tempfile  # noqa: F401  (tests patch tempfile through this module)

from ..utils import PROJECT_ROOT  # noqa: F401
from ..plan import parse_only, parse_seeds  # noqa: F401
from .common import *  # noqa: F401,F403
from .transaction import *  # noqa: F401,F403
from .kernel import *  # noqa: F401,F403
from .runner import *  # noqa: F401,F403
from .common import (_PROGRESS_SEGMENT, _RUNNING_KERNELS)  # noqa: F401
from .transaction import (_JOURNAL, _LOCK, _RUNNING, _STAGING, _apply_commit, _display, _is_stale, _owner_alive, _plan_commit, _rel, _shadow_results, _signals_deferred)  # noqa: F401
from .kernel import (_describe_error, _kernel_manager_class, _kill_kernels, _peak_rss_mib)  # noqa: F401
from .runner import (_HELP_PARAGRAPHS, _clean_signals, _now)  # noqa: F401
