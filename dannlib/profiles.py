"""The three regeneration profiles.

- ``smoke``: seconds per notebook, for CI (nbval) — numbers are meaningless, only the code
  path is exercised;
- ``quick``: the default of ``make figures``, the sweep and regenerate, sized for a 2-core CPU (``make figures`` in about 20-25 minutes from an empty store; 18.4 min measured);
- ``paper``: the papers' step counts, 5 seeds on the headline rows (hours of a 2-core CPU,
  spread over sittings through the run store); the profile the committed notebooks, figures/
  and the README's tables carry (``dannlib.regenerate.COMMITTED_PROFILE``), and the default of
  the notebooks' parameters cell.

The runs of each notebook under each profile are listed once, in :mod:`dannlib.plan`; this
module only names the profiles and checks them.
"""
from __future__ import annotations

from .utils import check_choice

PROFILES = ("smoke", "quick", "paper")
DEFAULT_PROFILE = "quick"


def check_profile(profile: str) -> str:
    check_choice("profile", profile, PROFILES)
    return profile


def pick(settings: dict, profile: str) -> dict:
    """``settings[profile]`` after checking the profile name."""
    check_profile(profile)
    missing = [p for p in PROFILES if p not in settings]
    if missing:
        raise ValueError(f"settings lack profiles {missing}; give one entry for each of {PROFILES}")
    return dict(settings[profile])
