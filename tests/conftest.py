"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ci_env import in_ci
from dannlib.utils import configure_threads

# The study's one thread policy (dannlib.utils.configure_threads): one torch thread per test
# process; tests never call torch.set_num_threads themselves.
configure_threads(1)
# Sweep estimates priced as on the study's reference CPU (dannlib.store.machine_speed), without the speed probe:
# the same printed numbers on every machine.
os.environ["DANNLIB_SPEED"] = "1"


def _real_data_candidates() -> list[Path]:
    """$DANNLIB_DATA if set, then the shared data folder beside the repository (the repo
    lives at X/<name> with the shared data at X/shared/data)."""
    out = []
    if os.environ.get("DANNLIB_DATA"):
        out.append(Path(os.environ["DANNLIB_DATA"]).expanduser())
    out.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    return out


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The real data root (MNIST, USPS, BSDS500), or skip the test saying where it looked."""
    candidates = _real_data_candidates()
    for root in candidates:
        if (root / "MNIST" / "raw").is_dir():
            return root
    message = ("real data not found (looked in " + ", ".join(map(str, candidates))
               + "); set DANNLIB_DATA=/path/to/data to run this test")
    if in_ci():  # in CI a missing data root is a broken set-up, not a skip
        pytest.fail(message)
    pytest.skip(message)
