"""The label-free selection rules against hand computations on small arrays, and the fact
that none of them takes a target label."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from dannlib import selection
from dannlib.selection import (ORACLE, RULES, dev, dev_risk, importance_weights, information_maximisation, judge_rules,
                               label_free_scores, oracle_target_accuracy, per_sample_cross_entropy, pick,
                               prediction_entropy, rank_correlation, regret, reverse_validation, source_accuracy)

LABEL_FREE = [source_accuracy, dev, dev_risk, importance_weights, prediction_entropy, information_maximisation,
              reverse_validation, label_free_scores, selection.score_modules]


def test_source_accuracy_by_hand():
    logits = [[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]]  # arg-max 0, 1, 0, 1
    assert source_accuracy(logits, [0, 1, 1, 1]) == 0.75
    assert source_accuracy(torch.tensor(logits), torch.tensor([1, 0, 1, 0])) == 0.0


def test_oracle_reads_target_labels_and_says_so():
    logits = np.log([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]])  # arg-max 0, 2, 1
    assert oracle_target_accuracy(logits, [0, 2, 2]) == pytest.approx(2 / 3)
    assert "target_labels" in inspect.signature(oracle_target_accuracy).parameters
    assert "oracle" in oracle_target_accuracy.__doc__.lower() and "target" in oracle_target_accuracy.__doc__
    assert ORACLE == "oracle_target_accuracy" and ORACLE not in RULES


@pytest.mark.parametrize("fn", LABEL_FREE, ids=lambda f: f.__name__)
def test_no_rule_takes_a_target_label(fn):
    params = inspect.signature(fn).parameters
    assert not [p for p in params if p.startswith("target") and ("label" in p or p.endswith("_y"))
                and p != "target_pseudo_labels"]


def test_every_rule_is_scored():
    assert set(RULES) == {"source_accuracy", "dev", "entropy", "info_max", "reverse_validation"}


def test_entropy_and_information_maximisation_by_hand():
    p = np.array([[0.5, 0.5], [0.25, 0.75]])
    h1 = math.log(2)
    h2 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert prediction_entropy(np.log(p)) == pytest.approx((h1 + h2) / 2, abs=1e-12)
    # mean prediction (0.375, 0.625)
    h_mean = -(0.375 * math.log(0.375) + 0.625 * math.log(0.625))
    assert information_maximisation(np.log(p)) == pytest.approx(h_mean - (h1 + h2) / 2, abs=1e-12)
    # logits are shifted freely (softmax), and a one-hot row has entropy 0 (0 log 0 = 0)
    assert prediction_entropy(np.log(p) + 3.0) == pytest.approx((h1 + h2) / 2, abs=1e-12)
    assert prediction_entropy([[0.0, -math.inf]]) == 0.0


def test_information_maximisation_is_zero_for_a_collapse_and_log_n_for_confident_even_use():
    collapsed = np.array([[10.0, 0.0, 0.0]] * 4)
    assert information_maximisation(collapsed) == pytest.approx(0.0, abs=1e-12)
    confident = np.array([[50.0, 0, 0], [0, 50.0, 0], [0, 0, 50.0]])
    assert information_maximisation(confident) == pytest.approx(math.log(3), abs=1e-9)
    # the entropy rule cannot tell them apart: both near 0
    assert prediction_entropy(confident) < 1e-9


def test_per_sample_cross_entropy_by_hand():
    p = np.array([[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]])
    assert per_sample_cross_entropy(np.log(p), [0, 1, 1]) == pytest.approx(
        [math.log(2), -math.log(0.75), -math.log(0.1)])


def test_dev_risk_by_hand():
    losses, w = [1.0, 2.0, 3.0], [0.5, 1.0, 2.0]
    # L = w l = (0.5, 2, 6): mean 17/6; W mean 7/6
    # deviations: W (-2/3, -1/6, 5/6), L (-7/3, -5/6, 19/6)
    # Cov(L, W) = (14/9 + 5/36 + 95/36) / 2 = 13/6;  Var(W) = (16/36 + 1/36 + 25/36) / 2 = 7/12
    eta = -(13 / 6) / (7 / 12)  # -26/7
    expected = 17 / 6 + eta * 7 / 6 - eta  # 31/14
    assert expected == pytest.approx(31 / 14)
    assert dev_risk(losses, w) == pytest.approx(expected, abs=1e-12)
    # equal weights: no control variate, the plain mean loss
    assert dev_risk(losses, [1.0, 1.0, 1.0]) == pytest.approx(2.0)
    # constant weights: Var(W) = 0, no control variate, the weighted mean
    assert dev_risk(losses, [2.0, 2.0, 2.0]) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="same length"):
        dev_risk([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="weights"):
        dev_risk([1.0, 2.0], [1.0, -1.0])


def test_importance_weights_are_the_density_ratio_of_a_saturated_classifier():
    # One binary feature: an (almost) unregularised logistic regression with an intercept
    # reproduces the empirical P(target | x), so w(x) = p_t(x) / p_s(x) exactly.
    xs = np.array([[0.0], [0.0], [0.0], [1.0]])  # p_s(0) = 3/4, p_s(1) = 1/4
    xt = np.array([[0.0], [1.0], [1.0]])         # p_t(0) = 1/3, p_t(1) = 2/3
    w = importance_weights(xs, xt, C=1e8)
    assert w == pytest.approx([4 / 9, 4 / 9, 4 / 9, 8 / 3], rel=1e-3)
    # the weights average to 1 under the source: sum_x p_s(x) w(x) = sum_x p_t(x)
    assert w.mean() == pytest.approx(1.0, rel=1e-3)


def test_importance_weights_are_about_one_when_the_domains_match():
    rng = np.random.default_rng(0)
    w = importance_weights(rng.normal(size=(400, 3)), rng.normal(size=(200, 3)))
    # N_s / N_t = 2 undoes the prior: without it the weights would average 0.5
    assert w.mean() == pytest.approx(1.0, abs=0.05)
    assert np.median(np.abs(w - 1)) < 0.3


def test_dev_ranks_a_model_by_its_loss_where_the_target_lies():
    # Source at x in {0, 1}, target only at x = 1. Model A errs on x = 0 (no target there),
    # model B errs on x = 1: DEV must prefer A although both have the same source accuracy.
    feats = np.array([[0.0], [0.0], [1.0], [1.0]])
    y = np.array([0, 0, 1, 1])
    target = np.array([[1.0]] * 3 + [[0.0]])
    good = np.log([[0.1, 0.9], [0.1, 0.9], [0.1, 0.9], [0.1, 0.9]])  # right on x = 1 only
    bad = np.log([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])   # right on x = 0 only
    assert source_accuracy(good, y) == source_accuracy(bad, y) == 0.5
    assert dev(good, y, feats, target, C=1e8) < dev(bad, y, feats, target, C=1e8)


def test_reverse_validation_by_hand():
    # Target features on a line, pseudo-labelled by the sign: the reverse classifier's
    # boundary is x = 0 (the problem is symmetric). Source points -1.5, 0.5, 1.5 are then
    # predicted 0, 1, 1; with source labels 0, 0, 1 the accuracy is 2/3.
    ft = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    assert reverse_validation(ft, [0, 0, 1, 1], [[-1.5], [0.5], [1.5]], [0, 0, 1]) == pytest.approx(2 / 3)
    # wrong pseudo-labels (swapped) give a reverse classifier that is wrong on the source
    assert reverse_validation(ft, [1, 1, 0, 0], [[-1.5], [0.5], [1.5]], [0, 0, 1]) == pytest.approx(1 / 3)
    # a single pseudo-label class: a constant reverse classifier
    assert reverse_validation(ft, [1, 1, 1, 1], [[-1.5], [0.5], [1.5]], [0, 0, 1]) == pytest.approx(1 / 3)


def test_pick_regret_and_rank_correlation_by_hand():
    oracle = {"a": 0.70, "b": 0.90, "c": 0.80, "d": 0.60}
    assert pick({"a": 1.0, "b": 3.0, "c": 2.0}) == "b"
    assert regret({"a": 1.0, "b": 3.0, "c": 2.0, "d": 0.0}, oracle) == pytest.approx(0.0)
    assert regret({"a": 5.0, "b": 3.0, "c": 2.0, "d": 0.0}, oracle) == pytest.approx(0.20)
    # a diverged setting's nan score is skipped; settings the oracle lacks are ignored
    assert regret({"a": float("nan"), "c": 2.0, "d": 0.0, "z": 9.0}, oracle) == pytest.approx(0.10)
    # ranks: oracle d < a < c < b
    assert rank_correlation({"a": 2, "b": 4, "c": 3, "d": 1}, oracle) == pytest.approx(1.0)
    assert rank_correlation({"a": 3, "b": 1, "c": 2, "d": 4}, oracle) == pytest.approx(-1.0)
    # one swap of neighbours among 4: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert rank_correlation({"a": 1, "b": 4, "c": 3, "d": 2}, oracle) == pytest.approx(0.8)
    assert math.isnan(rank_correlation({"a": 1, "b": 1, "c": 1}, oracle))
    with pytest.raises(ValueError, match="no finite"):
        pick({"a": float("nan")})


def test_label_free_scores_are_higher_is_better():
    rng = np.random.default_rng(0)
    ys = np.repeat(np.arange(3), 20)
    fs = np.eye(3)[ys] * 3 + rng.normal(scale=0.3, size=(60, 3))
    ft = np.eye(3)[ys] * 3 + rng.normal(scale=0.3, size=(60, 3))
    good = label_free_scores(fs * 4, ys, fs, ft * 4, ft)        # logits agree with the classes
    noisy = label_free_scores(fs * 0.1, ys, fs, ft * 0.1, ft)   # same arg-max, unconfident
    assert good["source_accuracy"] == noisy["source_accuracy"] == 1.0
    assert good["entropy"] > noisy["entropy"] and good["info_max"] > noisy["info_max"]
    assert good["dev"] > noisy["dev"]  # lower risk, higher score
    assert good["entropy"] == pytest.approx(-prediction_entropy(ft * 4))
    assert set(good) == set(RULES)


def _tiny_dann_net(seed=0):
    from dannlib.networks import digits_net
    from dannlib.utils import seeded

    with seeded(seed):
        return digits_net(in_channels=1, size=28, n_classes=10)


def test_score_modules_never_sees_target_labels_and_matches_the_network():
    g = torch.Generator().manual_seed(0)
    xs, xt = torch.rand(40, 1, 28, 28, generator=g), torch.rand(30, 1, 28, 28, generator=g)
    ys = torch.arange(40) % 10
    net = _tiny_dann_net()
    scores = selection.score_modules({"net": net}, xs, ys, xt, n=None)
    with torch.no_grad():
        logits = net(xs)
    assert scores["source_accuracy"] == pytest.approx(float((logits.argmax(1) == ys).float().mean()))
    assert scores["entropy"] == pytest.approx(-prediction_entropy(net(xt).detach()), abs=1e-6)
    # ADDA-family modules: encoder + classifier give the same numbers as the DANN net split in two
    split = selection.score_modules({"encoder": _Features(net), "classifier": net.label_predictor}, xs, ys, xt,
                                    n=None)
    assert split == pytest.approx(scores)
    with pytest.raises(ValueError, match="modules must hold"):
        selection.score_modules({"foo": net}, xs, ys, xt)


class _Features(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.features(x)


def test_score_run_on_a_stored_run(tmp_path, real_data_root):
    from dannlib.store import RunSpec, Store, digits_data
    from dannlib.sweep import compute

    data = digits_data("mnist", "usps", n_source=100, n_target=100, n_test=100, channels=1)
    spec = RunSpec.make("dann", data, 0, monitor_size=50, steps=3, batch_size=16)
    stored = compute(spec, Store(tmp_path), data_root=real_data_root, progress=False)
    scores = selection.score_run(stored, n=60, data_root=real_data_root)
    assert set(scores) == set(RULES) | {ORACLE}
    # the oracle is the run's recorded target test accuracy (the whole target test split),
    # source accuracy with n=None its recorded source test accuracy
    assert scores[ORACLE] == pytest.approx(stored.final["target_test_acc"])
    full = selection.score_run(stored, n=None, data_root=real_data_root)
    assert full["source_accuracy"] == pytest.approx(stored.final["source_test_acc"])
    assert all(math.isfinite(v) for v in scores.values())


def test_plan_07_grid_has_the_no_reversal_control_and_every_cell_on_both_pairs():
    from dann_study.grids import ADDA_GRID, ADDA_GRID_RELEASED, DANN_GRID, IIMT_GRID
    from dann_study.plan import plan

    for profile in ("smoke", "quick", "paper"):
        controls = [r for r in plan("07", profile).runs if r.tags.get("schedule") == "none"]
        assert controls and all(r.spec.config["lambda_max"] == 0.0 for r in controls)
    paper = plan("07", "paper")
    n_dann = len(DANN_GRID["lambda_max"]) * len(DANN_GRID["schedule"]) + 1  # + the control, per lr
    usps = n_dann * len(DANN_GRID["lr"]) + len(IIMT_GRID["ramp_max"])
    released = n_dann * 1 + len(IIMT_GRID["ramp_max"])  # the released MNIST-M keeps the paper lr only
    adda = sum(len(g["lr"]) * len(g["stage2_steps"]) for g in (ADDA_GRID, ADDA_GRID_RELEASED))
    assert len(paper.runs) == (usps + released + adda) * 3
    smoke = {r.tags["pair"] for r in plan("07", "smoke").runs if r.tags["method"] == "adda_gan"}
    assert smoke == {"MNIST->USPS", "MNIST->MNIST-M (released)"} and len(ADDA_GRID_RELEASED["lr"]) == 2
    # the paper grid's 2,000-step DANN/IIMT default cells on MNIST->USPS are quick 06's runs
    six = {(r.tags["method"], r.spec.seed): r.spec.key for r in plan("06", "quick").runs
           if r.tags["method"] in ("dann", "iimt") and r.tags["pair"] == "MNIST->USPS"}
    defaults = [r for r in paper.runs if r.tags["pair"] == "MNIST->USPS" and (
        r.tags.get("ramp_max") == 1.0 or (r.tags.get("lambda_max"), r.tags.get("schedule"), r.tags.get("lr"))
        == (1.0, "ramp", 0.01))]
    assert len(defaults) == 6 and all(six.get((r.tags["method"], r.spec.seed)) == r.spec.key for r in defaults)


def test_judge_rules_by_hand():
    from dannlib.results import aggregate

    def rec(seed, lam, acc, src, ent):
        return {"method": "dann", "pair": "P", "seed": seed, "lambda_max": lam, ORACLE: acc,
                "source_accuracy": src, "entropy": ent}

    records = [rec(0, 0.1, 0.70, 0.99, -0.3), rec(0, 1.0, 0.80, 0.98, -0.2), rec(0, 3.0, 0.60, 0.97, -0.1),
               rec(1, 0.1, 0.72, 0.97, float("nan")), rec(1, 1.0, 0.82, 0.99, -0.2), rec(1, 3.0, 0.50, 0.98, -0.1)]
    rows = judge_rules(records, ("lambda_max",), rules=("source_accuracy", "entropy"))
    got = {(r["seed"], r["rule"]): r for r in rows}
    # seed 0: source accuracy picks 0.1 (0.80 - 0.70), entropy picks 3.0 (0.80 - 0.60)
    assert got[0, "source_accuracy"]["pick"] == {"lambda_max": 0.1}
    assert got[0, "source_accuracy"]["regret"] == pytest.approx(0.10)
    assert got[0, "entropy"]["regret"] == pytest.approx(0.20)
    assert got[0, "source_accuracy"]["spearman"] == pytest.approx(0.5)  # ranks (3,2,1) vs (2,3,1)
    # seed 1: source accuracy picks 1.0 (regret 0); entropy skips the nan and picks 3.0
    assert got[1, "source_accuracy"]["regret"] == pytest.approx(0.0)
    assert got[1, "entropy"]["pick"] == {"lambda_max": 3.0} and got[1, "entropy"]["regret"] == pytest.approx(0.32)
    (cell,) = [g for g in aggregate(rows, "regret", by=("method", "pair", "rule")) if g["rule"] == "entropy"]
    assert cell["mean"] == pytest.approx(0.26) and cell["n"] == 2
    with pytest.raises(ValueError, match="grid cell"):
        judge_rules(records + [rec(0, 0.1, 0.7, 0.9, -0.1)], ("lambda_max",))


def test_a_diverged_network_scores_nan_under_every_rule_and_is_never_picked():
    ys = np.array([0, 1, 0, 1])
    fs = np.array([[0.0], [1.0], [0.0], [1.0]])
    bad = np.array([[np.nan, 0.0]] * 4)
    scores = label_free_scores(bad, ys, fs, bad, fs)
    assert set(scores) == set(RULES) and all(math.isnan(v) for v in scores.values())
    assert pick({"diverged": scores["dev"], "ok": -1.0}) == "ok"


def test_importance_weights_stay_finite_for_separable_domains():
    xs, xt = np.zeros((5, 1)), np.full((5, 1), 100.0)
    w = importance_weights(xs, xt, C=1e8)
    assert np.all(np.isfinite(w)) and np.all(w < 1e-3)
    assert math.isfinite(dev_risk(np.ones(5), w))
