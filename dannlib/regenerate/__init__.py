"""Regenerate every figure: ``python -m dannlib regenerate`` executes ``notebooks/NN_*.ipynb`` with
papermill in number order, each notebook a transaction (see the help, ``runner._HELP_PARAGRAPHS``, for
where outputs go, the kernel's environment and the exit statuses). A run holds a :class:`RunLock`; a
notebook writes into staging named by its id, moved into place (after a journal lists the moves) only
when every cell succeeded; :func:`clean_stale` completes or removes a killed run's leftovers first.
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
