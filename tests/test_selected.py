"""``dannlib.grids.SELECTED``, the settings 05 and 06 train as their "selected" rows, is what
07's label-free selection chooses from the committed paper-profile grids, and the plans
train exactly those settings."""
from __future__ import annotations

import pytest

from dannlib.grids import GRID_SETTING, SELECTED, grid_config
from dannlib.plan import plan


def test_selected_is_what_the_label_free_rules_choose_from_the_committed_paper_grids(real_data_root):
    from dannlib.plan import fetch
    from dannlib.selection import RULES, judge_rules, scored_records
    from dannlib.selection_report import selections

    p, runs = fetch("07", "paper", train_missing="stored")
    if not SELECTED:
        pytest.skip("dannlib.plan.SELECTED is empty: 07's paper grids have not chosen yet")
    assert len({r.spec for _, r in runs}) == len(p.specs), "the committed store lacks some of 07's paper runs"
    recs = scored_records(runs, data_root=real_data_root)
    assert all(r["scores_from"] != "missing" for r in recs)
    rows = [r for r in judge_rules(recs, GRID_SETTING) if r["rule"] in RULES and r["n_settings"] >= 2]
    assert selections(recs, rows, GRID_SETTING) == SELECTED


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_05_and_06_train_the_selected_settings_on_every_headline_seed(profile):
    runs = plan("05", profile).runs + plan("06", profile).runs
    for (method, pair), sel in SELECTED.items():
        mine = [r for r in runs if r.tags["method"] == f"{method}_selected" and r.tags["pair"] == pair]
        notebook = "05" if method.startswith("adda") else "06"
        if pair not in plan(notebook, profile).settings["pairs"]:
            assert not mine
            continue
        headline = [r for r in runs if r.tags["method"] == method and r.tags["pair"] == pair]
        assert sorted(r.spec.seed for r in mine) == sorted({r.spec.seed for r in headline} or
                                                            set(plan(notebook, profile).seeds))
        config = grid_config(method, sel["setting"])
        for r in mine:
            assert r.spec.method == method
            for key, value in config.items():
                if key != "steps":  # ADDA's stage-2 length is scaled to the profile's
                    assert r.spec.config[key] == value, (method, pair, key)
            assert sel["rule"] in r.tags["chosen"]
