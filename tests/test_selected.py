"""``dann_study.grids.SELECTED``, the settings 05 and 06 train as their "selected" rows, is what
07's label-free selection chooses from the committed paper-profile grids, and the plans
train exactly those settings."""
from __future__ import annotations

import pytest

from dann_study.grids import GRID_SETTING, JUDGING_METHODS, SELECTED, grid_config
from dann_study.plan import plan
from dannlib.results import dumps


def test_selected_is_what_the_label_free_rules_choose_from_the_committed_paper_grids(real_data_root):
    from dann_study.plan import fetch
    from dann_study.selection_report import selections
    from dannlib.selection import RULES, judge_rules, scored_records
    from dannlib.store import Store
    from dannlib.utils import PROJECT_ROOT

    if not SELECTED:
        pytest.skip("dann_study.grids.SELECTED is empty: 07's paper grids have not chosen yet")
    # the committed store, whatever DANNLIB_RESULTS / DANNLIB_STORE say (make test points them elsewhere)
    p, runs = fetch("07", "paper", train_missing="stored", store=Store(PROJECT_ROOT / "results" / "runs"))
    assert len({r.spec for _, r in runs}) == len(p.specs), "the committed store lacks some of 07's paper runs"
    recs = scored_records(runs, data_root=real_data_root)
    assert all(r["scores_from"] != "missing" for r in recs)
    rows = [r for r in judge_rules(recs, GRID_SETTING) if r["rule"] in RULES and r["n_settings"] >= 2]
    chosen = selections(recs, rows, GRID_SETTING, judging=JUDGING_METHODS)
    assert dumps(chosen_keys(chosen)) == dumps(chosen_keys(SELECTED))  # dumps: 1 and 1.0 differ, as in run keys


def chosen_keys(selected):
    return sorted((m, p, v["rule"], v["judged_on"], sorted(v["setting"].items())) for (m, p), v in selected.items())


def test_a_selected_row_is_the_chosen_setting_at_the_profile_s_length(monkeypatch):
    """With SELECTED filled by hand: 06 trains the choice at its own length on every seed (a
    choice equal to the untuned setting is the untuned run itself), 05 scales ADDA's chosen
    stage-2 length to the profile's."""
    import dann_study.grids

    monkeypatch.setitem(dann_study.grids.SELECTED, ("iimt", "MNIST->USPS"),
                        {"rule": "dev", "judged_on": ["Q"], "setting": {"ramp_max": 1}})
    monkeypatch.setitem(dann_study.grids.SELECTED, ("adda_gan", "MNIST->USPS"),
                        {"rule": "entropy", "judged_on": ["Q"], "setting": {"lr": 5e-5, "stage2_steps": 3000}})
    for profile, stage2 in (("smoke", 2), ("quick", 600), ("paper", 3000)):
        p6, p5 = plan("06", profile), plan("05", profile)
        sel = [r for r in p6.runs if r.tags["method"] == "iimt_selected" and r.tags["pair"] == "MNIST->USPS"]
        untuned = {r.spec.seed: r.spec.key for r in p6.runs if r.tags["method"] == "iimt"
                   and r.tags["pair"] == "MNIST->USPS"}
        assert sorted(r.spec.seed for r in sel) == p6.seeds
        assert all(untuned[r.spec.seed] == r.spec.key for r in sel)  # ramp 1 (an int) is the untuned 1.0
        assert all("chosen by dev" in r.tags["chosen"] for r in sel)
        adda = [r for r in p5.runs if r.tags["method"] == "adda_gan_selected"]
        assert adda and all(r.spec.config["steps"] == stage2 and r.spec.config["lr"] == 5e-5 for r in adda)
        assert sorted(r.spec.seed for r in adda) == p5.seeds[:p5.settings["methods"]["adda_gan"]]


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
