"""Notebook 07's hyper-parameter grids, the untuned cell of each, and the settings 07's selection
chose for 05's and 06's "selected" rows. :mod:`dann_study.plan` turns them into runs."""
from __future__ import annotations

_U, _R = "MNIST->USPS", "MNIST->MNIST-M (released)"
#: "none" is the no-reversal control (lambda = 0: the domain classifier trains, the features get no
#: gradient). ADDA: stage 2's learning rate x its length, after the shared 10,000-step pre-training.
DANN_GRID = {"lambda_max": (0.1, 0.3, 1.0, 3.0), "lr": (0.01, 0.003),
             "schedule": {"ramp": "dann", "constant": "constant"}}
IIMT_GRID = {"ramp_max": (0.1, 0.3, 1.0, 3.0, 10.0)}
ADDA_GRID = {"lr": (2e-4, 5e-5), "stage2_steps": (3000, 10_000)}
#: ADDA-GAN on the released MNIST-M: the same learning rates, a shorter stage 2 (the grids' budget)
ADDA_GRID_RELEASED = {"lr": (2e-4, 5e-5), "stage2_steps": (1000, 3000)}
#: ADDA's stage-2 length in the paper profile (05's), against which smoke and quick scale a chosen length
ADDA_PAPER_STEPS = 10_000
#: the untuned settings the other notebooks train; a (method, pair) key overrides the method's
GRID_DEFAULTS = {"dann": {"schedule": "ramp", "lambda_max": 1.0, "lr": 0.01}, "iimt": {"ramp_max": 1.0},
                 "adda_gan": {"lr": 2e-4, "stage2_steps": 10_000},
                 ("adda_gan", _R): {"lr": 2e-4, "stage2_steps": 3000}}
#: the methods whose grids on the other pair judge a pair's rule (both pairs' grids when SELECTED was computed)
JUDGING_METHODS = ("dann", "iimt")
#: the tags that make one cell of 07's grids (a tag a method lacks reads as None)
GRID_SETTING = ("schedule", "lambda_max", "lr", "ramp_max", "stage2_steps")

#: The settings 07's label-free selection chose from the paper grids (:func:`dann_study.selection_report.selections`),
#: which 05 and 06 train at full length as "selected" rows; tests/test_selected.py recomputes them.
SELECTED: dict[tuple[str, str], dict] = {
    ("dann", _U): {"rule": "info_max", "judged_on": [_R], "setting": {"schedule": "constant", "lambda_max": 0.1,
                                                                       "lr": 0.01}},
    ("iimt", _U): {"rule": "info_max", "judged_on": [_R], "setting": {"ramp_max": 3.0}},
    ("dann", _R): {"rule": "info_max", "judged_on": [_U], "setting": {"schedule": "ramp", "lambda_max": 0.1,
                                                                       "lr": 0.01}},
    ("iimt", _R): {"rule": "info_max", "judged_on": [_U], "setting": {"ramp_max": 0.3}},
    ("adda_gan", _U): {"rule": "info_max", "judged_on": [_R], "setting": {"lr": 0.0002, "stage2_steps": 10000}},
    ("adda_gan", _R): {"rule": "info_max", "judged_on": [_U], "setting": {"lr": 5e-05, "stage2_steps": 3000}},
}


def grid_config(method: str, setting: dict) -> dict:
    """The run config of a grid cell's tags: rates floats, lengths ints (a run key tells 1 from 1.0)."""
    if method == "dann":
        none = setting["schedule"] == "none"
        return {"lambda_schedule": "constant" if none else DANN_GRID["schedule"][setting["schedule"]],
                "lambda_max": 0.0 if none else float(setting["lambda_max"]), "lr": float(setting["lr"])}
    if method == "iimt":
        return {"ramp_max": float(setting["ramp_max"])}
    if method == "adda_gan":
        return {"lr": float(setting["lr"]), "steps": int(setting["stage2_steps"])}
    raise ValueError(f"no grid for method {method!r}; grids: dann, iimt, adda_gan")

#: Notebook 09's speedrun (issue 22): DANN on MNIST -> released MNIST-M within SPEEDRUN_SECONDS of one core. Candidates:
#: the network (the paper's, each image standardised, + batch norm), the precision and the optimiser (the paper's SGD +
#: eq. 7, or dann_adam's constant Adam); each (network, precision)'s steps fill about 100 s at the step rates measured
#: on the study's CPU. Picked by info_max (07's rule for DANN on this pair: SELECTED) among the cells within budget.
SPEEDRUN_SECONDS = 120.0
SPEEDRUN_GRID = {"network": ("digits", "digits_in", "digits_in_bn"), "precision": ("fp32", "bf16"),
                 "optimizer": ("sgd", "adam")}
SPEEDRUN_STEPS = {("digits", "fp32"): 4000, ("digits", "bf16"): 6000, ("digits_in", "fp32"): 4000,
                  ("digits_in", "bf16"): 6000, ("digits_in_bn", "fp32"): 3500, ("digits_in_bn", "bf16"): 5000}
SPEEDRUN_OPTIMIZERS = {"sgd": {"optimizer": "sgd", "lr": 0.01, "lr_schedule": "annealed"},
                       "adam": {"optimizer": "adam", "lr": 1e-3, "lr_schedule": "constant"}}
SPEEDRUN_RULE = "info_max"
#: notebook 09's oracle diagnostic (it chooses nothing): the best candidate network read with target labels, at 03's
#: paper length (10,000 steps, the paper's SGD and eq. 7), in each precision: does the goal lie within its reach?
SPEEDRUN_CEILING = {"network": "digits_in", "optimizer": "sgd", "precisions": ("fp32", "bf16"), "steps": 10_000}
#: the cell SPEEDRUN_RULE picked from the committed paper grid (tests/test_speedrun.py recomputes it);
#: registered as the method ``dann_speedrun``
SPEEDRUN = {"network": "digits_in_bn", "precision": "bf16", "optimizer": "sgd"}


def speedrun_config(cell: dict, steps: int | None = None) -> dict:
    """The DANN config of a speedrun cell ``{"network", "precision", "optimizer"}``: its steps (or ``steps``) with
    4 monitoring evaluations (``fit``'s default 20 would cost about 14 s more a run)."""
    steps = steps or SPEEDRUN_STEPS[cell["network"], cell["precision"]]
    return {"network": cell["network"], "precision": cell["precision"], "steps": steps,
            "eval_every": max(1, steps // 4), **SPEEDRUN_OPTIMIZERS[cell["optimizer"]]}
