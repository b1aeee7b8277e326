"""The three regeneration profiles.

- ``smoke``: seconds per notebook, for CI (nbval) — numbers are meaningless, only the code
  path is exercised;
- ``quick``: the default, sized for a 2-core CPU in minutes;
- ``paper``: the papers' step counts and at least 5 seeds, meant for a GPU.

Each notebook keeps its own per-profile settings in its second cell; this module only
names the profiles and checks them.
"""
from __future__ import annotations

import os

from .utils import check_choice

PROFILES = ("smoke", "quick", "paper")
DEFAULT_PROFILE = "quick"


def check_profile(profile: str) -> str:
    check_choice("profile", profile, PROFILES)
    return profile


def env_profile(default: str = DEFAULT_PROFILE) -> str:
    """The profile from ``$DANNLIB_PROFILE`` (how CI runs notebooks under nbval), checked."""
    return check_profile(os.environ.get("DANNLIB_PROFILE", default))


def pick(settings: dict, profile: str) -> dict:
    """``settings[profile]`` after checking the profile name."""
    check_profile(profile)
    missing = [p for p in PROFILES if p not in settings]
    if missing:
        raise ValueError(f"settings lack profiles {missing}; give one entry for each of {PROFILES}")
    return dict(settings[profile])
