"""Whether the tests run under CI (``$CI`` set to anything but empty, 0, false or no): there a missing data root,
Dask or browser is a broken set-up and fails, where a developer's machine skips."""
from __future__ import annotations

import os


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
