"""Notebook 07's tables and figure against hand computations, and the label-free scores that
``dannlib.sweep.compute`` keeps in a run's record (so that a clone without weights files can
judge the rules)."""
from __future__ import annotations

import json
import math

import matplotlib
import pytest

matplotlib.use("Agg")

from dann_study.selection_report import DEFAULT, RANDOM, baseline_rows, selection_table, trust_table, verdicts
from dannlib import selection
from dannlib.selection import ORACLE, RULES, judge_rules

SETTING = ("lambda_max",)
ACC = {0: {0.1: 0.70, 1.0: 0.80, 3.0: 0.60}, 1: {0.1: 0.72, 1.0: 0.82, 3.0: 0.50}}


def _records(scores):
    """One record per seed and lambda_max: the oracle from ACC, each rule's score from
    ``scores[rule][seed][lambda_max]``."""
    return [{"method": "dann", "pair": "P", "seed": seed, "lambda_max": lam, ORACLE: acc,
             **{rule: by_seed[seed][lam] for rule, by_seed in scores.items()}}
            for seed, grid in ACC.items() for lam, acc in grid.items()]


def test_baseline_rows_by_hand():
    records = _records({}) + [{"method": "dann", "pair": "P", "seed": 1, "lambda_max": 9.0}]  # no oracle: not a cell
    rows = baseline_rows(records, SETTING, {"dann": {"lambda_max": 0.1}})
    got = {(r["seed"], r["rule"]): r for r in rows}
    assert got[0, DEFAULT]["regret"] == pytest.approx(0.10) and got[0, DEFAULT]["pick"] == {"lambda_max": 0.1}
    assert got[1, DEFAULT]["regret"] == pytest.approx(0.10)
    # random pick: mean over the 3 cells of (best - acc): seed 0 (0.1 + 0 + 0.2) / 3, seed 1 (0.1 + 0 + 0.32) / 3
    assert got[0, RANDOM]["regret"] == pytest.approx(0.1) and got[1, RANDOM]["regret"] == pytest.approx(0.14)
    assert got[1, RANDOM]["n_settings"] == 3 and math.isnan(got[0, RANDOM]["spearman"])
    # a method without a default gets only the random pick
    assert {r["rule"] for r in baseline_rows(records, SETTING, {})} == {RANDOM}


def _rows():
    # good: picks the best on both seeds and ranks like the oracle; bad: picks the worst;
    # middling: 0.1 on both seeds (regret 0.10 = the default's, below the random pick's)
    scores = {"good": {s: dict(g) for s, g in ACC.items()},
              "bad": {s: {k: -v for k, v in g.items()} for s, g in ACC.items()},
              "middling": {s: {0.1: 3.0, 1.0: 2.0, 3.0: 1.0} for s in ACC}}
    records = _records(scores)
    rows = judge_rules(records, SETTING, rules=tuple(scores))
    rows += judge_rules(records, SETTING, rules=(ORACLE,))
    return rows + baseline_rows(records, SETTING, {"dann": {"lambda_max": 0.1}})


def test_selection_table_by_hand():
    table = selection_table(_rows())
    good, bad = table.loc[("dann", "P", "good")], table.loc[("dann", "P", "bad")]
    assert good["regret (oracle best − pick)"] == "0.000 ± 0.000 (2)" and good["picked the oracle's best"] == "2 of 2"
    assert good["Spearman with the oracle"] == "1.000 ± 0.000 (2)"
    assert good["most frequent pick"] == "lambda_max 1 (2 of 2)"
    # bad picks 3.0: regret 0.20 and 0.32
    assert bad["regret (oracle best − pick)"].startswith("0.260 ± ") and bad["picked the oracle's best"] == "0 of 2"
    assert table.loc[("dann", "P", ORACLE)]["regret (oracle best − pick)"] == "0.000 ± 0.000 (2)"
    assert list(table.index.get_level_values("rule")) == ["good", "bad", "middling", ORACLE, DEFAULT, RANDOM]


def test_verdicts_and_the_rule_to_trust():
    got = {v["rule"]: v for v in verdicts(_rows())}
    assert set(got) == {"good", "bad", "middling"}  # neither the oracle nor a baseline is judged
    assert got["good"]["verdict"] == "trust" and got["good"]["regret"] == pytest.approx(0.0)
    assert got["bad"]["verdict"] == "no better than a random pick"
    assert got["middling"]["verdict"] == "no better than the untuned default"
    assert got["good"]["default_regret"] == pytest.approx(0.10) and got["good"]["random_regret"] == pytest.approx(0.12)
    table = trust_table(_rows())
    row = table.loc[("dann", "P")]
    assert row["rule to trust"] == "good" and row["its mean regret"] == "0.000 (2 seeds)"
    assert row["no better than a random pick"] == "bad" and row["no better than the untuned default"] == "middling"


def test_a_rule_that_picks_the_best_but_ranks_the_rest_backwards_is_not_trusted():
    # six settings, accuracy lam / 10; the rule scores the best highest and the other five in reverse:
    # regret 0 on every seed, Spearman 1 - 6 * (16 + 4 + 0 + 4 + 16) / (6 * 35) = -1/7
    scores = {6: 10.0, 1: 5.0, 2: 4.0, 3: 3.0, 4: 2.0, 5: 1.0}
    records = [{"method": "dann", "pair": "P", "seed": seed, "lambda_max": float(lam), ORACLE: lam / 10,
                "lucky": scores[lam]} for seed in (0, 1) for lam in range(1, 7)]
    rows = judge_rules(records, SETTING, rules=("lucky",)) + baseline_rows(records, SETTING,
                                                                           {"dann": {"lambda_max": 1.0}})
    (v,) = verdicts(rows)
    assert v["regret"] == pytest.approx(0.0) and v["spearman"] == pytest.approx(-1 / 7)
    assert v["verdict"] == "picks well, ranks badly"
    assert trust_table(rows).loc[("dann", "P")]["rule to trust"] == "none"


def test_no_trusted_rule_says_none():
    rows = [r for r in _rows() if r["rule"] != "good"]
    assert trust_table(rows).loc[("dann", "P")]["rule to trust"] == "none"


def test_the_rule_to_trust_is_the_lowest_regret_even_beside_a_rule_without_score():
    # rows in the order middling (regret 0.10), unscored (NaN), good (0): a sort that meets a NaN keeps that order
    scores = {"middling": {s: {0.1: 3.0, 1.0: 2.0, 3.0: 1.0} for s in ACC},
              "unscored": {s: {k: math.nan for k in g} for s, g in ACC.items()},
              "good": {s: dict(g) for s, g in ACC.items()}}
    records = _records(scores)
    rows = (judge_rules(records, SETTING, rules=tuple(scores))
            + baseline_rows(records, SETTING, {"dann": {"lambda_max": 3.0}}))
    judged = {v["rule"]: v["verdict"] for v in verdicts(rows)}
    assert judged == {"middling": "trust", "unscored": "no score", "good": "trust"}
    assert trust_table(rows).loc[("dann", "P"), "rule to trust"] == "good"


def test_runs_that_did_not_finish_ok_are_no_cells_of_the_judged_grid():
    records = _records({"good": {s: dict(g) for s, g in ACC.items()}})
    for r in records:
        if r["lambda_max"] == 1.0:  # the oracle's best cell diverged on both seeds
            r["status"] = "diverged"
    rows = judge_rules(records, SETTING, rules=("good",)) + baseline_rows(records, SETTING, {})
    assert {r["n_settings"] for r in rows} == {2}
    assert all(r["pick"] != {"lambda_max": 1.0} for r in rows if r["rule"] == "good")
    assert all(r["regret"] == pytest.approx(0) for r in rows if r["rule"] == "good")


def test_plot_setting_sweep_draws_a_line_per_hue_and_the_control():
    from dannlib.plotting import plot_setting_sweep

    recs = [{"method": "dann", "seed": s, "schedule": sch, "lambda_max": lam, "lr": 0.01,
             "target_test_acc": 0.5 + 0.1 * lam + 0.01 * s} for s in (0, 1) for sch in ("ramp", "constant")
            for lam in (0.1, 1.0, 3.0)]
    recs += [{"method": "dann", "seed": s, "schedule": "none", "lambda_max": 0.0, "lr": 0.01,
              "target_test_acc": 0.4} for s in (0, 1)]
    recs.append({**recs[0], "seed": 2, "status": "diverged", "target_test_acc": 0.1})
    fig = plot_setting_sweep(recs, "target_test_acc", x="lambda_max", hue="schedule", panel="lr",
                             control={"schedule": "none"}, control_label="no reversal")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"schedule = ramp (1 run(s) not ok)", "schedule = constant", "no reversal (mean of 2 seed(s))"}
    ramp = lines["schedule = ramp (1 run(s) not ok)"]
    assert list(ramp.get_ydata()) == pytest.approx([0.515, 0.605, 0.805])  # means of the ok seeds
    assert list(lines["no reversal (mean of 2 seed(s))"].get_ydata()) == pytest.approx([0.4, 0.4])
    # every ok seed a point: 2 hues x 3 settings x 2 seeds, and the control's 2
    assert sum(len(c.get_offsets()) for c in ax.collections) == 14
    assert ax.get_xscale() == "log"


def test_plan_07_defaults_are_cells_of_every_profile_grid():
    from dann_study.plan import plan

    for profile in ("smoke", "quick", "paper"):
        p = plan("07", profile)
        for key, cell in p.settings["defaults"].items():  # a method, or (method, pair) for one pair
            method, pairs = (key, None) if isinstance(key, str) else (key[0], {key[1]})
            assert any(r.tags["method"] == method and (pairs is None or r.tags["pair"] in pairs)
                       and all(r.tags.get(k) == v for k, v in cell.items()) for r in p.runs), (profile, key)


# -- the scores kept in a run's record ---------------------------------------------------------
def test_compute_keeps_every_rule_and_the_oracle_in_the_record(tmp_path, real_data_root):
    from dannlib.store import RunSpec, Store, digits_data
    from dannlib.sweep import compute

    data = digits_data("mnist", "usps", n_source=100, n_target=100, n_test=100, channels=1)
    spec = RunSpec.make("dann", data, 0, monitor_size=50, steps=3, batch_size=16)
    stored = compute(spec, Store(tmp_path), data_root=real_data_root, progress=False)
    kept = Store(tmp_path).get(spec).final[selection.SELECTION_FIELD]
    assert set(kept) == set(RULES) | {ORACLE}
    # the same numbers as scoring the saved weights afterwards, the oracle the recorded accuracy
    assert kept == pytest.approx(selection.score_run(stored, data_root=real_data_root))
    assert kept[ORACLE] == pytest.approx(stored.final["target_test_acc"])
    (rec,) = selection.scored_records([({"pair": "P"}, stored)], data_root=real_data_root)
    assert rec["scores_from"] == "record" and selection.SELECTION_FIELD not in rec
    assert {k: rec[k] for k in kept} == pytest.approx(kept)

    # a run stored before the field: scored from its weights; without them, missing (no oracle either)
    blob = json.loads(stored.path.read_text())
    del blob["final"][selection.SELECTION_FIELD]
    stored.path.write_text(json.dumps(blob))
    old = Store(tmp_path).get(spec)
    (rec,) = selection.scored_records([({}, old)], data_root=real_data_root)
    assert rec["scores_from"] == "weights" and {k: rec[k] for k in kept} == pytest.approx(kept)
    old.weights_path.unlink()
    (rec,) = selection.scored_records([({}, Store(tmp_path).get(spec))], data_root=real_data_root)
    assert rec["scores_from"] == "missing" and ORACLE not in rec and not set(RULES) & set(rec)


def test_toy_runs_keep_no_selection_scores(tmp_path):
    from dannlib.store import RunSpec, Store, toy_data
    from dannlib.sweep import compute

    spec = RunSpec.make("dann", toy_data("blobs", n=60, seed=0), 0, monitor_size=20, network="toy", steps=5,
                        batch_size=16, lr=0.01)
    assert selection.SELECTION_FIELD not in compute(spec, Store(tmp_path), progress=False).final


def test_a_grid_of_one_setting_judges_nothing():
    records = [{"method": "dann", "pair": "P", "seed": s, "lambda_max": 1.0, ORACLE: 0.8, "r": 0.5} for s in (0, 1)]
    rows = judge_rules(records, SETTING, rules=("r",)) + baseline_rows(records, SETTING, {"dann": {"lambda_max": 1.0}})
    (v,) = verdicts(rows)
    assert v["regret"] == 0.0 and v["verdict"] == "fewer than two settings"
    assert selection_table(rows).loc[("dann", "P", "r")]["settings scored per seed"] == "1"


# -- the picks that feed 05 and 06 ---------------------------------------------------------------
def _judged(pair, regrets):
    """judge_rules-like rows on ``pair``: rule -> regrets over seeds."""
    return [{"method": "dann", "pair": pair, "seed": i, "rule": rule, "regret": v, "spearman": 0.0,
             "n_settings": 3, "pick": None} for rule, vs in regrets.items() for i, v in enumerate(vs)]


def test_rule_for_a_pair_is_judged_on_the_other_pairs_only():
    from dann_study.selection_report import rule_for_pair

    rows = (_judged("A", {"entropy": [0.0, 0.0], "dev": [0.10, 0.20]})      # entropy wins on A
            + _judged("B", {"entropy": [0.30, 0.10], "dev": [0.05, 0.05]}))  # dev wins on B (0.05 < 0.20)
    assert rule_for_pair(rows, "A", rules=("entropy", "dev")) == ("dev", ["B"])
    assert rule_for_pair(rows, "B", rules=("entropy", "dev")) == ("entropy", ["A"])
    # a method with a grid on the other pair only does not vote (pooled, iimt on B would make entropy win for A)
    only_b = [{**r, "method": "iimt"} for r in _judged("B", {"entropy": [0.0, 0.0], "dev": [0.9, 0.9]})]
    assert rule_for_pair(rows + only_b, "A", rules=("entropy", "dev")) == ("dev", ["B"])
    assert rule_for_pair(rows + only_b, "B", rules=("entropy", "dev")) == ("entropy", ["A"])
    assert rule_for_pair(rows + only_b, "A", methods={"dann", "iimt"}, rules=("entropy", "dev")) == ("entropy", ["B"])
    with pytest.raises(ValueError, match="other than 'A'"):
        rule_for_pair(_judged("A", {"entropy": [0.0]}), "A")


def test_select_setting_takes_the_best_seed_mean_score_and_never_the_oracle():
    from dann_study.selection_report import select_setting

    # entropy scores: lambda 0.1 -> mean(0.5, 0.1) = 0.3; 1.0 -> mean(0.2, 0.2) = 0.2; 3.0 -> mean(0.9, -0.9) = 0
    scores = {"entropy": {0: {0.1: 0.5, 1.0: 0.2, 3.0: 0.9}, 1: {0.1: 0.1, 1.0: 0.2, 3.0: -0.9}}}
    recs = _records(scores)
    assert select_setting(recs, "entropy", SETTING, {"method": "dann", "pair": "P"}) == {"lambda_max": 0.1}
    # the oracle's best (1.0) is not what it picks; another method's records are not read
    recs.append({"method": "iimt", "pair": "P", "seed": 0, "lambda_max": 3.0, "entropy": 99.0})
    assert select_setting(recs, "entropy", SETTING, {"method": "dann", "pair": "P"}) == {"lambda_max": 0.1}
    assert select_setting(recs, "dev", SETTING, {"method": "dann", "pair": "P"}) is None  # no score at all


def test_select_setting_needs_every_seed_scored_and_ok():
    from dann_study.selection_report import select_setting

    # lambda 3.0 has the best mean on the seed it scored (0.9) but diverged (nan) on seed 1;
    # lambda 0.1 is best on seed 0 but its seed-1 run is not ok: 1.0 is the only full cell
    recs = _records({"entropy": {0: {0.1: 0.6, 1.0: 0.2, 3.0: 0.9}, 1: {0.1: 0.6, 1.0: 0.2, 3.0: float("nan")}}})
    for r in recs:
        if r["seed"] == 1 and r["lambda_max"] == 0.1:
            r["status"] = "collapsed"
    assert select_setting(recs, "entropy", SETTING, {"method": "dann", "pair": "P"}) == {"lambda_max": 1.0}


def test_selections_apply_the_other_pairs_rule_to_each_method_and_pair():
    from dann_study.selection_report import selections

    recs = _records({"entropy": {0: {0.1: 0.5, 1.0: 0.2, 3.0: 0.9}, 1: {0.1: 0.1, 1.0: 0.2, 3.0: -0.9}},
                     "dev": {0: {0.1: 0.0, 1.0: 0.0, 3.0: 1.0}, 1: {0.1: 0.0, 1.0: 0.0, 3.0: 1.0}}})
    rows = _judged("Q", {"entropy": [0.2], "dev": [0.1]})  # judged on another pair: dev
    out = selections(recs, rows, SETTING, rules=("entropy", "dev"))
    assert out == {("dann", "P"): {"rule": "dev", "judged_on": ["Q"], "setting": {"lambda_max": 3.0}}}
    # a method none of whose cells is scored on every seed gets no choice (and no crash)
    recs += [{"method": "iimt", "pair": "P", "seed": s, "ramp_max": 1.0, "dev": float("nan")} for s in (0, 1)]
    assert ("iimt", "P") not in selections(recs, rows, SETTING, rules=("entropy", "dev"))


def test_a_rule_over_two_settings_has_no_measured_ranking_not_a_bad_one():
    records = [r for r in _records({"good": {s: dict(g) for s, g in ACC.items()}}) if r["lambda_max"] != 3.0]
    rows = (judge_rules(records, SETTING, rules=("good",))
            + baseline_rows(records, SETTING, {"dann": {"lambda_max": 0.1}}))
    (v,) = verdicts(rows)
    assert v["regret"] == pytest.approx(0) and math.isnan(v["spearman"])
    assert v["verdict"] == "picks well, ranking not measured"


def test_the_grid_description_says_smokes_test_images_are_drawn_at_random():
    from dann_study.plan import plan
    from dann_study.selection_report import grid_description
    p = plan("07", "smoke")
    assert all(d.get("subset_seed") is not None for d in (s.data for s in p.specs))  # load_domain draws a subset
    text = grid_description(p, plan("07", "paper").settings)
    assert "drawn at random" in text and "the first" not in text
