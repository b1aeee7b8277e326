"""The profiles: ``smoke`` (seconds, for CI; numbers meaningless), ``quick`` (the default: a 2-core CPU,
about 20 minutes) and ``paper`` (the papers' step counts; the committed outputs). Runs: :mod:`dann_study.plan`."""
from __future__ import annotations

from dannlib.utils import check_choice

PROFILES = ("smoke", "quick", "paper")
DEFAULT_PROFILE = "quick"


def check_profile(profile: str) -> str:
    return check_choice("profile", profile, PROFILES)


def pick(settings: dict, profile: str) -> dict:
    """``settings[profile]`` after checking the profile name."""
    check_profile(profile)
    if missing := [p for p in PROFILES if p not in settings]:
        raise ValueError(f"settings lack profiles {missing}; give one entry for each of {PROFILES}")
    return dict(settings[profile])
