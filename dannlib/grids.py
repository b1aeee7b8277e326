"""The hyper-parameter grids of notebook 07 (label-free model selection, issue 20), the
untuned cell of each, and the settings 07's selection chose for 05's and 06's "selected"
rows. :mod:`dannlib.plan` turns them into runs."""
from __future__ import annotations

#: The grids that 07's selection rules (``dannlib.selection``) choose from. "none" is the
#: no-reversal control: DANN's domain classifier trains, but lambda = 0 sends no gradient to the
#: features. ADDA's grid is stage 2's learning rate crossed with its length (05's recipe
#: otherwise: the shared 10,000-step pre-training, batches of 128).
DANN_GRID = {"lambda_max": (0.1, 0.3, 1.0, 3.0), "lr": (0.01, 0.003),
             "schedule": {"ramp": "dann", "constant": "constant"}}
IIMT_GRID = {"ramp_max": (0.1, 0.3, 1.0, 3.0, 10.0)}
ADDA_GRID = {"lr": (2e-4, 5e-5), "stage2_steps": (3000, 10_000)}
#: ADDA-GAN on the released MNIST-M (not one of ADDA's own pairs): the same learning rates, shorter
#: stage 2 (the grids' budget), after a 10,000-step source pre-training on MNIST at 3 channels
ADDA_GRID_RELEASED = {"lr": (2e-4, 5e-5), "stage2_steps": (1000, 3000)}
#: ADDA's stage-2 length in the paper profile (05's), against which smoke and quick scale a chosen length
ADDA_PAPER_STEPS = 10_000
#: the untuned settings the other notebooks train (03's and 06's DANN, 06's IIMT, 05's ADDA-GAN)
#: (a (method, pair) key overrides the method's for that pair: ADDA's longest released-MNIST-M cell)
GRID_DEFAULTS = {"dann": {"schedule": "ramp", "lambda_max": 1.0, "lr": 0.01}, "iimt": {"ramp_max": 1.0},
                 "adda_gan": {"lr": 2e-4, "stage2_steps": 10_000},
                 ("adda_gan", "MNIST->MNIST-M (released)"): {"lr": 2e-4, "stage2_steps": 3000}}
#: the methods whose grids on the other pair judge the rule that chooses a pair's settings (the
#: grids both pairs had when SELECTED was computed; ADDA's released-MNIST-M grid came later)
JUDGING_METHODS = ("dann", "iimt")
#: the tags that make one cell of 07's grids (a tag a method lacks reads as None)
GRID_SETTING = ("schedule", "lambda_max", "lr", "ramp_max", "stage2_steps")


#: The settings 07's label-free selection chose from the paper profile's grids, which 05 and 06
#: train at full length as their "selected" rows: (method, pair) -> {"rule", "judged_on",
#: "setting"} (:func:`dannlib.selection_report.selections`: the rule with the lowest mean regret
#: on the *other* pair's grids, applied to this pair's rule scores; no target label of the pair).
#: tests/test_selected.py recomputes them from the committed store.
SELECTED: dict[tuple[str, str], dict] = {
    ('dann', 'MNIST->USPS'): {'rule': 'info_max', 'judged_on': ['MNIST->MNIST-M (released)'], 'setting': {'schedule': 'constant', 'lambda_max': 0.1, 'lr': 0.01}},
    ('iimt', 'MNIST->USPS'): {'rule': 'info_max', 'judged_on': ['MNIST->MNIST-M (released)'], 'setting': {'ramp_max': 3.0}},
    ('dann', 'MNIST->MNIST-M (released)'): {'rule': 'info_max', 'judged_on': ['MNIST->USPS'], 'setting': {'schedule': 'ramp', 'lambda_max': 0.1, 'lr': 0.01}},
    ('iimt', 'MNIST->MNIST-M (released)'): {'rule': 'info_max', 'judged_on': ['MNIST->USPS'], 'setting': {'ramp_max': 0.3}},
    ('adda_gan', 'MNIST->USPS'): {'rule': 'info_max', 'judged_on': ['MNIST->MNIST-M (released)'], 'setting': {'lr': 0.0002, 'stage2_steps': 10000}},
    ('adda_gan', 'MNIST->MNIST-M (released)'): {'rule': 'info_max', 'judged_on': ['MNIST->USPS'], 'setting': {'lr': 5e-05, 'stage2_steps': 3000}},
}


def grid_config(method: str, setting: dict) -> dict:
    """The run config of a grid cell's tags (07's ``setting``). Rates and weights become
    floats, lengths ints: a run's key hashes its config, where 1 and 1.0 differ."""
    if method == "dann":
        lr = float(setting["lr"])
        if setting["schedule"] == "none":
            return {"lambda_schedule": "constant", "lambda_max": 0.0, "lr": lr}
        return {"lambda_schedule": DANN_GRID["schedule"][setting["schedule"]],
                "lambda_max": float(setting["lambda_max"]), "lr": lr}
    if method == "iimt":
        return {"ramp_max": float(setting["ramp_max"])}
    if method == "adda_gan":
        return {"lr": float(setting["lr"]), "steps": int(setting["stage2_steps"])}
    raise ValueError(f"no grid for method {method!r}; grids: dann, iimt, adda_gan")
