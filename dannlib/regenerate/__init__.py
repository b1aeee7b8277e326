"""Regenerate every figure: ``python -m dannlib regenerate`` executes ``notebooks/NN_*.ipynb``
with papermill, in number order, each notebook as a transaction (the help epilog,
``_HELP_PARAGRAPHS``, says where outputs go, the kernel's environment and the exit statuses).

A regeneration has a run id (:func:`new_run_id`) and holds a :class:`RunLock` in each output
folder. A notebook writes into ``.staging-<run id>-NN_name/`` folders (its records' one starts as
a copy of ``<results>/<profile>/``) and ``.NN_name.<run id>.running.ipynb``; only when every cell
succeeded are they moved into place, after the moves are listed in a journal
(``.NN_name.<run id>.commit.json``) that the next run replays if this one is killed. Before any
notebook starts, settings and output folders are checked and the leftovers of runs whose lock
nobody holds are completed or removed (:func:`clean_stale`). Saved notebooks are tidied
(:func:`tidy_notebook`). SIGINT/SIGTERM kill the kernel, drop the staging, print one line and
exit 130/143.
"""
from __future__ import annotations

import tempfile  # noqa: F401  (tests patch tempfile through this module)

from ..plan import parse_only, parse_seeds  # noqa: F401
from ..settings import check_writable  # noqa: F401
from ..utils import PROJECT_ROOT  # noqa: F401
from . import runner, transaction  # noqa: F401
from .runner import (COMMITTED_PROFILE, KERNEL_ENV, Interrupted, NotebookRun, Outputs,  # noqa: F401
                     add_arguments, find_notebooks, regenerate, resolve_outputs, run_from_args,
                     run_notebook, select_notebooks, write_report)
from .transaction import (JOURNAL_SUFFIX, REPORT_NAME, RUN_LOCK_PREFIX, RUN_LOCK_SUFFIX,  # noqa: F401
                          RUNNING_SUFFIX, STAGING_PREFIX, RunLock, _apply_commit, _plan_commit, clean_stale,
                          lab_kernelspec, new_run_id, normalize_notebook, path_replacements, tidy_notebook)
