"""The runs of notebooks 07 (label-free model selection: the settings grids) and 08 (the
shortfalls, each diagnosed by controlled runs, many of them 05's, 06's and 07's read again)
under each profile: plan builders, as in :mod:`dann_study.plan_runs`.
"""
from __future__ import annotations

from itertools import product

from dannlib.store import RunSpec

from .grids import (ADDA_GRID, ADDA_GRID_RELEASED, DANN_GRID, GRID_DEFAULTS, GRID_SETTING, IIMT_GRID, SPEEDRUN_CEILING,
                    SPEEDRUN_GRID, grid_config, speedrun_config)
from .plan_runs import MNIST_M_PAIRS, Planned, _pair_data, _plan_03, _plan_05, _plan_06, _seeds

U, R = "MNIST->USPS", MNIST_M_PAIRS["mnist_m_released"]


def _plan_07(profile, seeds):
    # paper: 2,000-step runs, a fifth of the study's length (issue 20's budget: 4 h of the 2-core
    # machine for every grid); ADDA's stage-2 length is a grid axis; on the released MNIST-M
    # DANN keeps its paper learning rate only
    paper = {"n_seeds": 3, "steps": 2000, "eval_every": 100, "monitor_size": 2000, "n_cap": None, "n_test": None,
             "lambda_max": {U: list(DANN_GRID["lambda_max"]), R: list(DANN_GRID["lambda_max"])},
             "lr": {U: list(DANN_GRID["lr"]), R: [0.01]},
             "ramp_max": {U: list(IIMT_GRID["ramp_max"]), R: list(IIMT_GRID["ramp_max"])},
             "adda": {"grid": {U: {k: list(v) for k, v in ADDA_GRID.items()},
                               R: {k: list(v) for k, v in ADDA_GRID_RELEASED.items()}},
                      "pretrain_steps": 10_000, "batch_size": 128, "eval_every": 250}}
    s = {"paper": paper,
         "quick": {**paper, "steps": 1000, "lambda_max": {U: [0.1, 1.0, 3.0], R: []}, "lr": {U: [0.01], R: []},
                   "ramp_max": {U: [0.1, 1.0, 10.0], R: []},
                   "adda": {"grid": {U: {"lr": [2e-4, 5e-5], "stage2_steps": [1000, 2000]}},
                            "pretrain_steps": 1000, "batch_size": 64, "eval_every": 100}},
         "smoke": {**paper, "n_seeds": 1, "steps": 6, "eval_every": 3, "monitor_size": 100, "n_cap": 200, "n_test": 100,
                   "lambda_max": {U: [0.1, 1.0], R: [1.0]}, "lr": {U: [0.01], R: [0.01]},
                   "ramp_max": {U: [0.1, 1.0], R: [1.0]},
                   "adda": {"grid": {U: {"lr": [2e-4, 5e-5], "stage2_steps": [4, 8]},
                                     R: {"lr": [2e-4], "stage2_steps": [4, 8]}},
                            "pretrain_steps": 8, "batch_size": 32, "eval_every": 4}}}[profile]
    seeds = _seeds(s["n_seeds"], seeds)
    pairs = {pair: _pair_data(pair, s["n_cap"], s["n_test"]) for pair in (U, R)}  # 06's data
    cells = []  # (pair, method, tags); floats throughout (1 and 1.0 are different keys)
    for pair in pairs:
        for lr in map(float, s["lr"][pair]):
            cells += [(pair, "dann", {"schedule": schedule, "lambda_max": lam, "lr": lr})
                      for schedule in DANN_GRID["schedule"] for lam in map(float, s["lambda_max"][pair])]
            cells.append((pair, "dann", {"schedule": "none", "lambda_max": 0.0, "lr": lr}))
        cells += [(pair, "iimt", {"ramp_max": ramp}) for ramp in map(float, s["ramp_max"][pair])]
    a = s["adda"]
    cells += [(pair, "adda_gan", {"lr": lr, "stage2_steps": steps}) for pair, grid in a["grid"].items()
              for lr in map(float, grid["lr"]) for steps in grid["stage2_steps"]]
    common = {"dann": dict(monitor_size=s["monitor_size"], steps=s["steps"], batch_size=32, eval_every=s["eval_every"]),
              "adda_gan": {"monitor_size": s["monitor_size"], "pretrain_steps": a["pretrain_steps"],
                           "batch_size": a["batch_size"], "eval_every": a["eval_every"]}}
    runs = [Planned(RunSpec.make(method, pairs[pair], seed, **common.get(method, common["dann"]),
                                 **grid_config(method, tags)), {"pair": pair, "method": method, **tags})
            for pair, method, tags in cells for seed in seeds]
    # ADDA's untuned cell: ADDA's learning rate at the grid's longest stage 2 (on MNIST->USPS 05's length)
    defaults = {**{k: v for k, v in GRID_DEFAULTS.items() if isinstance(k, str)},
                **{("adda_gan", pair) if pair != U else "adda_gan": {"lr": 2e-4, "stage2_steps": max(g["stage2_steps"])}
                   for pair, g in a["grid"].items()}}
    return {**s, "pairs": list(pairs), "batch_size": 32, "defaults": defaults, "setting": GRID_SETTING}, seeds, runs


#: IIMT without the adversarial term (06's ``iimt_no_adversarial``) and its controls, on 06's
#: MNIST->MNIST-M setting: all its target terms weighted 0 (must train exactly like the next row),
#: source-only plus intra-source mixup (the target terms switched off).
IIMT_TARGET_TERMS = ("inter_mixup", "target_dominated_mixup", "consistency", "intra_target")
IIMT_CONTROLS = {
    "no_adversarial": {},
    "target_weights_0": {"w_inter": 0.0, "w_target_mix": 0.0, "w_consistency": 0.0, "w_intra_target": 0.0},
    "source_intra_mixup": {t: False for t in IIMT_TARGET_TERMS},
}


def _plan_08(profile, seeds):
    asked = seeds  # the notebooks whose runs 08 reads again take the seeds asked for, as they would themselves
    paper = {"n_seeds": 3, "steps": 10_000, "eval_every": 250, "monitor_size": 2000, "n_cap": None, "n_test": None,
             "long_steps": 20_000, "n_long_seeds": 3, "n_network_seeds": 2,
             "controls_seeds": {"no_adversarial": 3, "target_weights_0": 1, "source_intra_mixup": 3}}
    s = {"paper": paper,
         "quick": {**paper, "n_seeds": 0, "n_long_seeds": 0, "n_network_seeds": 0, "controls_seeds": {}},
         "smoke": {**paper, "n_seeds": 1, "steps": 6, "eval_every": 3, "monitor_size": 100, "n_cap": 200, "n_test": 100,
                   "long_steps": 12, "n_long_seeds": 1, "n_network_seeds": 1,
                   "controls_seeds": {k: 1 for k in IIMT_CONTROLS}}}[profile]
    seeds = _seeds(max(s["n_seeds"], 1), seeds)
    cap, n_test, monitor = s["n_cap"], s["n_test"], s["monitor_size"]
    mnist_m = _pair_data("MNIST->MNIST-M", cap, n_test)
    common = dict(steps=s["steps"], batch_size=32, eval_every=s["eval_every"])
    # the controls, then the references on the same seeds (03's and 06's runs): (method, row, seeds)
    cells = [("iimt_no_adversarial", control, n) for control, n in s["controls_seeds"].items()]
    cells += [(m, m, s["controls_seeds"].get("no_adversarial", 0)) for m in ("source_only", "iimt")]
    runs = [Planned(RunSpec.make(method, mnist_m, seed, monitor_size=monitor, **common, **IIMT_CONTROLS.get(row, {})),
                    {"diagnosis": "iimt_no_adversarial", "pair": "MNIST->MNIST-M", "method": row})
            for method, row, n in cells for seed in seeds[:n]]
    # ADDA-GAN's stage 2 and 06's baselines: the stored runs of 05 and 06, read again
    runs_05, runs_06, runs_07 = (f(profile, asked)[2] for f in (_plan_05, _plan_06, _plan_07))
    runs += [Planned(r.spec, {"diagnosis": "adda_gan_decay", **r.tags}) for r in runs_05
             if r.tags["method"] == "adda_gan"]
    # ADDA-GAN's stage 2, controlled: 07's grid on MNIST->USPS (learning rate x length), read again
    runs += [Planned(r.spec, {"diagnosis": "adda_stage2", "pair": r.tags["pair"],
                              "method": f"lr {r.tags['lr']:g}, {r.tags['stage2_steps']:,} steps"})
             for r in runs_07 if r.tags["method"] == "adda_gan" and r.tags["pair"] == U]
    # IIMT's network: 07's untuned DANN and IIMT cells on the released MNIST-M (2,000 steps) read
    # again, against the same runs on VADA's small CNN (Shu et al. 2018) instead of the digits network
    for r in runs_07:
        t = r.tags
        if (t["pair"] == R and t["method"] in ("dann", "iimt") and r.spec.seed in seeds[:s["n_network_seeds"]]
                and all(t.get(k) == v for k, v in GRID_DEFAULTS[t["method"]].items())):
            vada = RunSpec.make(r.spec.method, r.spec.data, r.spec.seed, monitor_size=r.spec.monitor_size,
                                **{**r.spec.config, "network": "vada_small"})
            runs += [Planned(spec, {"diagnosis": "iimt_network", "pair": t["pair"], "method": f"{t['method']} {net}"})
                     for spec, net in ((r.spec, "digits"), (vada, "vada_small"))]
    baselines = {"06": (runs_06, ("source_only", "dann", "iimt", "dann_selected", "iimt_selected")),
                 "05": (runs_05, ("adda_pretrain", "dann_lenet"))}
    runs += [Planned(r.spec, {"diagnosis": "baselines", "from": nb, **r.tags}) for nb, (rs, names) in baselines.items()
             for r in rs if r.tags["pair"] == U and r.tags["method"] in names]
    # DANN on the released data: 03's recipe (10,000 steps of 32 + 32 at 28 px; the length is ours,
    # the DANN papers do not state one) against twice the steps, the JMLR paper's batch (64 + 64,
    # Ganin et al. 2016, sec. 5.2.2) and its 32 px images (arXiv 1409.7495, sec. 4)
    released, released_32 = _pair_data(R, cap, n_test), _pair_data(R, cap, n_test, size=32)
    variants = [(f"dann {steps:,} steps", released, 32, steps) for steps in (s["steps"], s["long_steps"])]
    variants += [("dann batch 64 + 64", released, 64, s["steps"]), ("dann 32 px", released_32, 32, s["steps"])]
    runs += [Planned(RunSpec.make("dann", data, seed, monitor_size=monitor, steps=steps, batch_size=batch,
                                  eval_every=s["eval_every"]), {"diagnosis": "dann_length", "pair": R, "method": label})
             for label, data, batch, steps in variants for seed in seeds[:s["n_long_seeds"]]]
    return s, seeds, runs


def _plan_09(profile, seeds):
    """The speedrun: its candidate grid (``SPEEDRUN_GRID``, 2 seeds a cell), the registered recipe
    ``dann_speedrun`` (5 seeds), 03's paper-recipe DANN on the same data, read again, and the oracle diagnostic
    ``SPEEDRUN_CEILING`` (5 seeds a precision)."""
    from dannlib.methods import METHODS
    paper = {"n_seeds": 5, "n_grid_seeds": 2, "n_ceiling_seeds": 5, "n_cap": None, "n_test": None,
             "monitor_size": 2000, "grid": SPEEDRUN_GRID, "steps": None}
    s = {"paper": paper, "quick": {**paper, "n_seeds": 2, "n_grid_seeds": 0, "n_ceiling_seeds": 0},
         "smoke": {**paper, "n_seeds": 1, "n_grid_seeds": 1, "n_ceiling_seeds": 1, "n_cap": 200, "n_test": 100,
                   "monitor_size": 100, "steps": 6, "grid": {"network": ("digits", "digits_in"), "precision": ("bf16",),
                                                             "optimizer": ("sgd",)}}}[profile]
    seeds = _seeds(s["n_seeds"], seeds)
    data = _pair_data(R, s["n_cap"], s["n_test"])

    def dann_runs(setting, steps, n, **tags):  # n seeds of DANN at a speedrun setting
        config = speedrun_config(setting, steps)
        return [Planned(RunSpec.make("dann", data, seed, monitor_size=s["monitor_size"], **config),
                        {"pair": R, **tags, **setting}) for seed in seeds[:n]]

    runs = []
    for values in product(*s["grid"].values()):
        runs += dann_runs(dict(zip(s["grid"], values)), s["steps"], s["n_grid_seeds"], method="dann_candidate",
                          cell="grid")
    fixed = METHODS["dann_speedrun"][1]
    # the registered recipe at the profile's steps, if it sets any (with speedrun_config's evaluation rule)
    steps = ({k: v for k, v in speedrun_config(fixed, s["steps"]).items() if k in ("steps", "eval_every")}
             if s["steps"] else {})
    runs += [Planned(RunSpec.make("dann_speedrun", data, seed, monitor_size=s["monitor_size"], **steps),
                     {"pair": R, "method": "dann_speedrun", "cell": "speedrun", **{k: fixed[k] for k in SPEEDRUN_GRID}})
             for seed in seeds]
    paper_recipe = {"cell": "paper recipe", "network": "digits", "precision": "fp32", "optimizer": "sgd"}
    runs += [Planned(r.spec, {**r.tags, **paper_recipe}) for r in _plan_03(profile, seeds)[2]
             if r.tags["pair"] == R and r.tags["method"] == "dann"]
    c = SPEEDRUN_CEILING
    for precision in c["precisions"]:
        cell = {"network": c["network"], "precision": precision, "optimizer": c["optimizer"]}
        runs += dann_runs(cell, s["steps"] or c["steps"], s["n_ceiling_seeds"],
                          method=f"dann_{c['network']}_{precision}", cell="ceiling")
    return {**s, "batch_size": 32}, seeds, runs
