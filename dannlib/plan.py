"""The runs each notebook needs under each profile: the one list that the notebooks and
``python -m dannlib sweep`` both read.

Profiles (``dannlib.profiles``): ``smoke`` exercises every code path in seconds (CI);
``quick`` is sized for a 2-core CPU (the whole ``make figures`` in about 20-25 minutes from an empty store);
``paper`` keeps the papers' step counts with 5 seeds on the headline rows and 3 on ablation
variants. Where quick and paper ask for the same run (same method, config, data, seed), the
store computes it once.

Each entry of a plan is a :class:`Planned` run: a :class:`~dannlib.store.RunSpec` plus
``tags`` for the tables (the toy, the domain pair, the row's label).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .profiles import check_profile
from .grids import (ADDA_GRID, ADDA_GRID_RELEASED, ADDA_PAPER_STEPS, DANN_GRID, GRID_DEFAULTS, GRID_SETTING, IIMT_GRID,
                    SELECTED, grid_config)
from .store import RunSpec, digits_data, toy_data

NOTEBOOKS = {
    "01": "01_toy_blobs",
    "02": "02_mnist_m_construction",
    "03": "03_dann_vs_source_only",
    "04": "04_tsne_embeddings",
    "05": "05_adda_comparison",
    "06": "06_iimt_mixup_ablation",
    "07": "07_model_selection",
    "08": "08_shortfalls",
}


@dataclass(frozen=True)
class Planned:
    spec: RunSpec
    tags: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Plan:
    notebook: str
    profile: str
    seeds: list[int]
    settings: dict
    runs: list[Planned]

    @property
    def specs(self) -> list[RunSpec]:
        return list(dict.fromkeys(p.spec for p in self.runs))


def _seeds(n: int, seeds) -> list[int]:
    from .utils import check_seeds

    return check_seeds(seeds) if seeds is not None else list(range(n))


# -- 01: toys ---------------------------------------------------------------------------------------
TOYS = {  # the network of each mode (the deeper domain classifier for dann_deep) and mu_0
    "blobs": {"data": {"n": 300, "seed": 0}, "network": "toy", "network_deep": "toy_deep", "lr": 0.01},
    "moons": {"data": {"n": 300, "seed": 0, "angle": 35.0}, "network": "toy_wide", "network_deep": "toy_wide_deep",
              "lr": 0.05},
}
TOY_MODES = ["source_only", "domain_only", "dann", "dann_deep"]


def _plan_01(profile, seeds):
    s = {"smoke": {"n_seeds": 2, "steps": 100}, "quick": {"n_seeds": 5, "steps": 2000},
         "paper": {"n_seeds": 10, "steps": 10_000}}[profile]
    seeds = _seeds(s["n_seeds"], seeds)
    runs = []
    for toy, t in TOYS.items():
        for mode in TOY_MODES:
            net = t["network_deep"] if mode == "dann_deep" else t["network"]
            for seed in seeds:
                spec = RunSpec.make(mode, toy_data(toy, **t["data"]), seed, network=net, lr=t["lr"], steps=s["steps"],
                                    batch_size=32)
                runs.append(Planned(spec, {"toy": toy, "method": mode}))
    return {**s, "batch_size": 32, "toys": TOYS}, seeds, runs


# -- 03 and 04: MNIST -> MNIST-M ------------------------------------------------------------------
def _settings_03(profile):
    return {
        "smoke": {"n_seeds": 1, "methods": ["source_only", "dann", "dann_adam", "train_on_target"],
                  "released_methods": ["source_only", "dann", "cdan", "train_on_target"],
                  "n_train": 500, "n_test": 500, "steps": 30, "eval_every": 10, "monitor_size": 200},
        "quick": {"n_seeds": 3, "methods": ["source_only", "dann", "train_on_target"], "released_methods": [],
                  "n_train": None, "n_test": None, "steps": 10_000, "eval_every": 250, "monitor_size": 2000},
        "paper": {"n_seeds": 5, "methods": ["source_only", "dann", "dann_adam", "train_on_target"],
                  "released_methods": ["source_only", "dann", "cdan", "train_on_target"],
                  "n_train": None, "n_test": None, "steps": 10_000, "eval_every": 250, "monitor_size": 2000},
    }[profile]


#: The pair label of each MNIST-M target: the study's own build, and the released data set the
#: papers measured on (Ganin & Lempitsky 2015).
MNIST_M_PAIRS = {"mnist_m": "MNIST->MNIST-M", "mnist_m_released": "MNIST->MNIST-M (released)"}


def _mnist_m_runs(s, seeds, methods, target="mnist_m"):
    data = digits_data("mnist", target, n_source=s["n_train"], n_target=s["n_train"], n_test=s["n_test"])
    return [Planned(RunSpec.make(m, data, seed, monitor_size=s["monitor_size"], steps=s["steps"], batch_size=32,
                                 eval_every=s["eval_every"]), {"pair": MNIST_M_PAIRS[target], "method": m})
            for m in methods for seed in seeds]


def _plan_03(profile, seeds):
    s = _settings_03(profile)
    seeds = _seeds(s["n_seeds"], seeds)
    runs = _mnist_m_runs(s, seeds, s["methods"]) + _mnist_m_runs(s, seeds, s["released_methods"], "mnist_m_released")
    return {**s, "batch_size": 32}, seeds, runs


def _plan_04(profile, seeds):
    s = _settings_03(profile)
    seeds = _seeds(s["n_seeds"], seeds)
    extra = {"smoke": {"n_sample": 150, "perplexity": 15}, "quick": {"n_sample": 1000, "perplexity": 30},
             "paper": {"n_sample": 1000, "perplexity": 30}}[profile]
    return {**s, **extra, "methods": ["source_only", "dann"]}, seeds, _mnist_m_runs(s, seeds, ["source_only", "dann"])


# -- 05: ADDA -------------------------------------------------------------------------------------
#: ADDA's MNIST <-> USPS protocol (Tzeng et al. 2017, sec. 4.1): 2,000 MNIST and 1,800 USPS
#: training images; every domain on [0, 1], 28 px, one channel.
USPS_PAIRS = {
    "MNIST->USPS": digits_data("mnist", "usps", n_source=2000, n_target=1800, channels=1),
    "USPS->MNIST": digits_data("usps", "mnist", n_source=1800, n_target=2000, channels=1),
}


def _plan_05(profile, seeds):
    s = {
        "smoke": {"n_seeds": 1, "pairs": ["MNIST->USPS"], "pretrain_steps": 8, "steps": 8, "batch_size": 32,
                  "eval_every": 4, "monitor_size": 200, "n_test": 200,
                  "methods": {"adda_gan": 1, "adda_minimax": 1, "adda_confusion": 1, "dann_lenet": 1}},
        # quick pre-trains 1,000 steps: in the 2,000-step pre-trainings (3 seeds, both pairs) the
        # monitored *source* test accuracy changed by at most 0.002 from step 1,000 to 2,000 (a
        # source-label criterion; target labels played no part). It keeps `make figures` in budget.
        "quick": {"n_seeds": 3, "pairs": list(USPS_PAIRS), "pretrain_steps": 1000, "steps": 2000, "batch_size": 64,
                  "eval_every": 100, "monitor_size": 2000, "n_test": None,
                  "methods": {"adda_gan": 3, "dann_lenet": 3}},
        "paper": {"n_seeds": 5, "pairs": list(USPS_PAIRS), "pretrain_steps": 10_000, "steps": 10_000,
                  "batch_size": 128, "eval_every": 250, "monitor_size": 2000, "n_test": None,
                  "methods": {"adda_gan": 5, "dann_lenet": 5, "adda_minimax": 3, "adda_confusion": 3}},
    }[profile]
    seeds = _seeds(s["n_seeds"], seeds)
    runs = []
    common = dict(pretrain_steps=s["pretrain_steps"], steps=s["steps"], batch_size=s["batch_size"],
                  eval_every=s["eval_every"])
    for pair in s["pairs"]:
        data = {**USPS_PAIRS[pair], "n_test": s["n_test"]}
        for method, n in s["methods"].items():
            for seed in seeds[:n]:
                spec = RunSpec.make(method, data, seed, monitor_size=s["monitor_size"], **common)
                runs.append(Planned(spec, {"pair": pair, "method": method}))
                if method == "adda_gan":  # the source-only row: the same pre-training
                    (pre,) = spec.dependencies()
                    runs.append(Planned(pre, {"pair": pair, "method": "adda_pretrain"}))
    # ADDA-GAN at the stage-2 setting 07's label-free selection chose (SELECTED), 05's seeds
    pairs = {pair: {**USPS_PAIRS[pair], "n_test": s["n_test"]} for pair in s["pairs"]}
    runs += _selected_runs(pairs, seeds[:s["methods"]["adda_gan"]], ["adda_gan"],
                           {**common, "monitor_size": s["monitor_size"]}, stage2_steps=s["steps"])
    return s, seeds, runs


# -- 06: IIMT ------------------------------------------------------------------------------------
def _plan_06(profile, seeds):
    from .methods.iimt import ABLATIONS

    s = {
        "smoke": {"n_seeds": 1, "pairs": ["MNIST->USPS"], "steps": 6, "eval_every": 3, "monitor_size": 100,
                  "n_test": 100, "n_cap": 200, "headline": ["source_only", "dann", "iimt"],
                  "ablations": [m for m in ABLATIONS if m != "iimt"], "n_ablation_seeds": 1},
        "quick": {"n_seeds": 3, "pairs": ["MNIST->USPS"], "steps": 2000, "eval_every": 100, "monitor_size": 2000,
                  "n_test": None, "n_cap": None, "headline": ["source_only", "dann", "iimt"], "ablations": [],
                  "n_ablation_seeds": 0},
        "paper": {"n_seeds": 5, "pairs": ["MNIST->USPS", "MNIST->MNIST-M", "MNIST->MNIST-M (released)"],
                  "steps": 10_000, "eval_every": 250, "monitor_size": 2000, "n_test": None, "n_cap": None,
                  "headline": ["source_only", "dann", "iimt"], "ablations": [m for m in ABLATIONS if m != "iimt"],
                  "n_ablation_seeds": 3},
    }[profile]
    # on the released MNIST-M, 03's source-only and DANN runs (the untuned rows) and the selected ones
    s = {**s, "released_methods": ["source_only", "dann"]}
    seeds = _seeds(s["n_seeds"], seeds)
    pairs = {
        "MNIST->USPS": digits_data("mnist", "usps", n_source=s["n_cap"] or 2000, n_target=s["n_cap"] or 1800,
                                   n_test=s["n_test"], channels=1),
        "MNIST->MNIST-M": digits_data("mnist", "mnist_m", n_source=s["n_cap"], n_target=s["n_cap"],
                                      n_test=s["n_test"]),
        MNIST_M_PAIRS["mnist_m_released"]: digits_data("mnist", "mnist_m_released", n_source=s["n_cap"],
                                                       n_target=s["n_cap"], n_test=s["n_test"]),
    }
    pairs = {pair: pairs[pair] for pair in s["pairs"]}
    common = dict(monitor_size=s["monitor_size"], steps=s["steps"], batch_size=32, eval_every=s["eval_every"])
    runs = []
    for pair in pairs:
        methods = s["released_methods"] if pair == MNIST_M_PAIRS["mnist_m_released"] else s["headline"] + s["ablations"]
        for method in methods:
            n = len(seeds) if method in s["headline"] else s["n_ablation_seeds"]
            for seed in seeds[:n]:
                runs.append(Planned(RunSpec.make(method, pairs[pair], seed, **common), {"pair": pair, "method": method}))
    # DANN and IIMT at the settings 07's label-free selection chose (SELECTED), on every seed
    runs += _selected_runs(pairs, seeds, ["dann", "iimt"], common)
    return s, seeds, runs


# -- 07: label-free model selection (issue 20) ---------------------------------------------------
def _selected_runs(pairs: dict, seeds, methods, common: dict, stage2_steps: int = ADDA_PAPER_STEPS) -> list[Planned]:
    """05's and 06's "selected" rows: ``methods`` at :data:`SELECTED`'s setting on each of
    ``pairs`` that has one, tagged ``<method>_selected`` with the choice in ``chosen``.
    ``stage2_steps``: the profile's ADDA stage-2 length, against which a chosen ADDA length
    (a paper-profile length) is scaled."""
    from .selection_report import chosen_text

    runs = []
    for pair, data in pairs.items():
        for method in methods:
            if (sel := SELECTED.get((method, pair))) is None:
                continue
            config = {**common, **grid_config(method, sel["setting"])}
            if method == "adda_gan":  # the stage-2 length is a grid axis; smoke and quick scale it
                config["steps"] = max(1, round(config["steps"] * stage2_steps / ADDA_PAPER_STEPS))
            for seed in seeds:
                runs.append(Planned(RunSpec.make(method, data, seed, **config),
                                    {"pair": pair, "method": f"{method}_selected", "chosen": chosen_text(sel)}))
    return runs


def _grid_pairs(s):
    """07's pairs: 06's MNIST->USPS data (ADDA's protocol sizes) and the released MNIST-M."""
    usps = {**USPS_PAIRS["MNIST->USPS"], "n_test": s["n_test"]}
    if s["n_cap"]:
        usps = {**usps, "n_source": s["n_cap"], "n_target": s["n_cap"]}
    released = digits_data("mnist", "mnist_m_released", n_source=s["n_cap"], n_target=s["n_cap"], n_test=s["n_test"])
    return {"MNIST->USPS": usps, MNIST_M_PAIRS["mnist_m_released"]: released}


def _plan_07(profile, seeds):
    s = {
        "smoke": {"n_seeds": 1, "steps": 6, "eval_every": 3, "monitor_size": 100, "n_cap": 200, "n_test": 100,
                  "lambda_max": {"MNIST->USPS": [0.1, 1.0], "MNIST->MNIST-M (released)": [1.0]},
                  "lr": {"MNIST->USPS": [0.01], "MNIST->MNIST-M (released)": [0.01]},
                  "ramp_max": {"MNIST->USPS": [0.1, 1.0], "MNIST->MNIST-M (released)": [1.0]},
                  "adda": {"grid": {"MNIST->USPS": {"lr": [2e-4, 5e-5], "stage2_steps": [4, 8]},
                                    "MNIST->MNIST-M (released)": {"lr": [2e-4], "stage2_steps": [4, 8]}},
                           "pretrain_steps": 8, "batch_size": 32, "eval_every": 4}},
        "quick": {"n_seeds": 3, "steps": 1000, "eval_every": 100, "monitor_size": 2000, "n_cap": None,
                  "n_test": None, "lambda_max": {"MNIST->USPS": [0.1, 1.0, 3.0], "MNIST->MNIST-M (released)": []},
                  "lr": {"MNIST->USPS": [0.01], "MNIST->MNIST-M (released)": []},
                  "ramp_max": {"MNIST->USPS": [0.1, 1.0, 10.0], "MNIST->MNIST-M (released)": []},
                  "adda": {"grid": {"MNIST->USPS": {"lr": [2e-4, 5e-5], "stage2_steps": [1000, 2000]}},
                           "pretrain_steps": 1000, "batch_size": 64, "eval_every": 100}},
        # paper: the grids' runs are 2,000 steps, a fifth of the study's paper length (budget: issue
        # 20 gives 4 h of the 2-core machine to every grid together); ADDA's stage-2 length is itself
        # a grid axis; the released MNIST-M grid keeps DANN's paper learning rate only
        "paper": {"n_seeds": 3, "steps": 2000, "eval_every": 100, "monitor_size": 2000, "n_cap": None,
                  "n_test": None,
                  "lambda_max": {"MNIST->USPS": list(DANN_GRID["lambda_max"]),
                                 "MNIST->MNIST-M (released)": list(DANN_GRID["lambda_max"])},
                  "lr": {"MNIST->USPS": list(DANN_GRID["lr"]), "MNIST->MNIST-M (released)": [0.01]},
                  "ramp_max": {"MNIST->USPS": list(IIMT_GRID["ramp_max"]),
                               "MNIST->MNIST-M (released)": list(IIMT_GRID["ramp_max"])},
                  "adda": {"grid": {"MNIST->USPS": {k: list(v) for k, v in ADDA_GRID.items()},
                                    "MNIST->MNIST-M (released)": {k: list(v) for k, v in ADDA_GRID_RELEASED.items()}},
                           "pretrain_steps": 10_000, "batch_size": 128, "eval_every": 250}},
    }[profile]
    seeds = _seeds(s["n_seeds"], seeds)
    pairs = _grid_pairs(s)
    common = dict(monitor_size=s["monitor_size"], steps=s["steps"], batch_size=32, eval_every=s["eval_every"])
    cells = []  # (pair, method, tags, config overrides); floats throughout (1 and 1.0 are different keys)
    for pair in pairs:
        for lr in map(float, s["lr"][pair]):
            for schedule in DANN_GRID["schedule"]:
                for lam in map(float, s["lambda_max"][pair]):
                    cells.append((pair, "dann", {"schedule": schedule, "lambda_max": lam, "lr": lr}))
            cells.append((pair, "dann", {"schedule": "none", "lambda_max": 0.0, "lr": lr}))
        for ramp in map(float, s["ramp_max"][pair]):
            cells.append((pair, "iimt", {"ramp_max": ramp}))
    a = s["adda"]  # ADDA's own pair, MNIST->USPS, and the released MNIST-M (shorter stage 2: the budget)
    adda = {"monitor_size": s["monitor_size"], "pretrain_steps": a["pretrain_steps"], "batch_size": a["batch_size"],
            "eval_every": a["eval_every"]}
    for pair, grid in a["grid"].items():
        for lr in map(float, grid["lr"]):
            for steps in grid["stage2_steps"]:
                cells.append((pair, "adda_gan", {"lr": lr, "stage2_steps": steps}))
    runs = [Planned(RunSpec.make(method, pairs[pair], seed, **(adda if method == "adda_gan" else common),
                                 **grid_config(method, tags)), {"pair": pair, "method": method, **tags})
            for pair, method, tags in cells for seed in seeds]
    # ADDA's untuned cell: ADDA's learning rate at the grid's longest stage 2 (on MNIST->USPS 05's length)
    defaults = {**{k: v for k, v in GRID_DEFAULTS.items() if isinstance(k, str)}, **{("adda_gan", pair) if pair != "MNIST->USPS" else "adda_gan":
                                    {"lr": 2e-4, "stage2_steps": max(g["stage2_steps"])} for pair, g in a["grid"].items()}}
    return {**s, "pairs": list(pairs), "batch_size": 32, "defaults": defaults,
            "setting": GRID_SETTING}, seeds, runs


# -- 08: the shortfalls, each diagnosed by controlled runs ---------------------------------------
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
    s = {
        "smoke": {"n_seeds": 1, "steps": 6, "eval_every": 3, "monitor_size": 100, "n_cap": 200, "n_test": 100,
                  "long_steps": 12, "controls_seeds": {k: 1 for k in IIMT_CONTROLS}, "n_long_seeds": 1,
                  "n_network_seeds": 1},
        "quick": {"n_seeds": 0, "steps": 10_000, "eval_every": 250, "monitor_size": 2000, "n_cap": None,
                  "n_test": None, "long_steps": 20_000, "controls_seeds": {}, "n_long_seeds": 0, "n_network_seeds": 0},
        "paper": {"n_seeds": 3, "steps": 10_000, "eval_every": 250, "monitor_size": 2000, "n_cap": None,
                  "n_test": None, "long_steps": 20_000, "n_long_seeds": 3, "n_network_seeds": 2,
                  "controls_seeds": {"no_adversarial": 3, "target_weights_0": 1, "source_intra_mixup": 3}},
    }[profile]
    seeds = _seeds(max(s["n_seeds"], 1), seeds)
    mnist_m = digits_data("mnist", "mnist_m", n_source=s["n_cap"], n_target=s["n_cap"], n_test=s["n_test"])
    runs = []
    common = dict(steps=s["steps"], batch_size=32, eval_every=s["eval_every"])
    for control, n in s["controls_seeds"].items():
        for seed in seeds[:n]:
            spec = RunSpec.make("iimt_no_adversarial", mnist_m, seed, monitor_size=s["monitor_size"],
                                **common, **IIMT_CONTROLS[control])
            runs.append(Planned(spec, {"diagnosis": "iimt_no_adversarial", "pair": "MNIST->MNIST-M",
                                       "method": control}))
    for method in ("source_only", "iimt"):  # the references, on the same seeds (03's and 06's runs)
        for seed in seeds[:s["controls_seeds"].get("no_adversarial", 0)]:
            spec = RunSpec.make(method, mnist_m, seed, monitor_size=s["monitor_size"], **common)
            runs.append(Planned(spec, {"diagnosis": "iimt_no_adversarial", "pair": "MNIST->MNIST-M",
                                       "method": method}))
    # ADDA-GAN's stage 2 and 06's baselines: the stored runs of 05 and 06, read again
    _, _, runs_05 = _plan_05(profile, None)
    _, _, runs_06 = _plan_06(profile, None)
    runs += [Planned(r.spec, {"diagnosis": "adda_gan_decay", **r.tags}) for r in runs_05
             if r.tags["method"] == "adda_gan"]
    # ADDA-GAN's stage 2, controlled: 07's grid on MNIST->USPS (learning rate x length), read again
    runs += [Planned(r.spec, {"diagnosis": "adda_stage2", "pair": r.tags["pair"],
                              "method": f"lr {r.tags['lr']:g}, {r.tags['stage2_steps']:,} steps"})
             for r in _plan_07(profile, None)[2] if r.tags["method"] == "adda_gan" and r.tags["pair"] == "MNIST->USPS"]
    # IIMT's network: 07's untuned DANN and IIMT cells on the released MNIST-M (2,000 steps) read
    # again, against the same runs on VADA's small CNN (Shu et al. 2018) instead of the digits network
    for r in _plan_07(profile, None)[2]:
        t = r.tags
        if (t["pair"] == "MNIST->MNIST-M (released)" and t["method"] in ("dann", "iimt")
                and r.spec.seed in seeds[:s["n_network_seeds"]]
                and all(t.get(k) == v for k, v in GRID_DEFAULTS[t["method"]].items())):
            vada = RunSpec.make(r.spec.method, r.spec.data, r.spec.seed, monitor_size=r.spec.monitor_size,
                                **{**r.spec.config, "network": "vada_small"})
            runs += [Planned(spec, {"diagnosis": "iimt_network", "pair": t["pair"], "method": f"{t['method']} {net}"})
                     for spec, net in ((r.spec, "digits"), (vada, "vada_small"))]
    runs += [Planned(r.spec, {"diagnosis": "baselines", "from": "06", **r.tags}) for r in runs_06
             if r.tags["pair"] == "MNIST->USPS"
             and r.tags["method"] in ("source_only", "dann", "iimt", "dann_selected", "iimt_selected")]
    runs += [Planned(r.spec, {"diagnosis": "baselines", "from": "05", **r.tags}) for r in runs_05
             if r.tags["pair"] == "MNIST->USPS" and r.tags["method"] in ("adda_pretrain", "dann_lenet")]
    # DANN on the released data: 03's recipe (10,000 steps of 32 + 32 at 28 px; the length is ours,
    # the DANN papers do not state one) against twice the steps, the JMLR paper's batch (64 + 64,
    # Ganin et al. 2016, sec. 5.2.2) and its 32 px images (arXiv 1409.7495, sec. 4)
    released = digits_data("mnist", "mnist_m_released", n_source=s["n_cap"], n_target=s["n_cap"], n_test=s["n_test"])
    for steps in (s["steps"], s["long_steps"]):
        for seed in seeds[:s["n_long_seeds"]]:
            spec = RunSpec.make("dann", released, seed, monitor_size=s["monitor_size"], steps=steps, batch_size=32,
                                eval_every=s["eval_every"])
            runs.append(Planned(spec, {"diagnosis": "dann_length", "pair": "MNIST->MNIST-M (released)",
                                       "method": f"dann {steps:,} steps"}))
    released_32 = digits_data("mnist", "mnist_m_released", n_source=s["n_cap"], n_target=s["n_cap"],
                              n_test=s["n_test"], size=32)
    for label, data, batch in (("dann batch 64 + 64", released, 64), ("dann 32 px", released_32, 32)):
        for seed in seeds[:s["n_long_seeds"]]:
            spec = RunSpec.make("dann", data, seed, monitor_size=s["monitor_size"], steps=s["steps"], batch_size=batch,
                                eval_every=s["eval_every"])
            runs.append(Planned(spec, {"diagnosis": "dann_length", "pair": "MNIST->MNIST-M (released)",
                                       "method": label}))
    return s, seeds, runs


_PLANS = {"01": _plan_01, "03": _plan_03, "04": _plan_04, "05": _plan_05, "06": _plan_06, "08": _plan_08}
_PLANS["07"] = _plan_07


def plan(notebook: str, profile: str, seeds=None) -> Plan:
    """The plan of ``notebook`` (its number, e.g. "03", or file stem) under ``profile``."""
    check_profile(profile)
    number = notebook[:2]
    if number not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOKS.values())}")
    if number not in _PLANS:
        return Plan(NOTEBOOKS[number], profile, [], {}, [])
    settings, seeds, runs = _PLANS[number](profile, seeds)
    return Plan(NOTEBOOKS[number], profile, seeds, settings, runs)


def plan_specs(notebook: str, profile: str, seeds=None) -> list[RunSpec]:
    return plan(notebook, profile, seeds).specs


def parse_only(text: str | Sequence[str] | None) -> list[str] | None:
    """``"01,3"`` -> ``["01", "03"]``; None or empty -> None (all notebooks)."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    numbers = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if not item.isdigit() or len(item) > 2:
            raise ValueError(f"only: {item!r} is not a notebook number (two digits, e.g. 01,03)")
        numbers.append(item.zfill(2))
    return numbers or None


def parse_seeds(text: str | Sequence[int] | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]``; None -> None (each notebook's profile default)."""
    if text is None:
        return None
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    try:
        seeds = [int(s) for s in items if s != ""]
    except (TypeError, ValueError):
        raise ValueError(f"seeds must be comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    from .utils import check_seeds

    return check_seeds(seeds)


def selected_notebooks(only=None) -> list[str]:
    """Notebook numbers in order, restricted to ``only`` (numbers) when given."""
    if not only:
        return list(NOTEBOOKS)
    unknown = [n for n in only if n not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown notebook number(s) {unknown}; known: {', '.join(NOTEBOOKS)}")
    return [n for n in NOTEBOOKS if n in only]


def fetch(notebook: str, profile: str, seeds=None, *, train_missing="auto", **kwargs):
    """The runs of ``notebook``'s plan from the store, training the missing ones per
    ``train_missing`` (see :func:`dannlib.sweep.ensure`: "auto" trains only what takes a few
    minutes and otherwise says how many runs are missing and which command computes them).
    Returns ``(plan, [(tags, StoredRun), ...])`` in plan order; failed computations are left out."""
    from .sweep import check_fetched, ensure

    p = plan(notebook, profile, seeds)
    seed_arg = "" if seeds is None else " --seeds " + ",".join(map(str, p.seeds))
    hint = f"python -m dannlib sweep --profile {profile} --only {notebook[:2]}{seed_arg}"
    stored = ensure(p.specs, train_missing=train_missing, hint=hint, **kwargs)
    runs = [(r.tags, stored[r.spec]) for r in p.runs if r.spec in stored]
    check_fetched(p, runs, ensure.last_summary, hint)
    return p, runs


def coverage_note(plan: Plan, runs, seeds=None) -> str:
    """Markdown saying which of ``plan``'s runs are not among ``runs`` (from :func:`fetch`),
    per tag group (e.g. "iimt, MNIST->USPS: 5 of 5 missing"), and the command that computes
    them; "" when every run is there. Notebooks show it so that a render made while the
    profile's sweep is still running (``train_missing="stored"``) says so."""
    got = {r.spec for _, r in runs}
    groups: dict[str, list[int]] = {}
    for p in plan.runs:
        label = ", ".join(str(v) for v in p.tags.values())
        n = groups.setdefault(label, [0, 0])
        n[1] += 1
        if p.spec not in got:
            n[0] += 1
    missing = {k: v for k, v in groups.items() if v[0]}
    if not missing:
        return ""
    n_missing = sum(p.spec not in got for p in plan.runs)
    seed_arg = "" if seeds is None else " --seeds " + ",".join(map(str, plan.seeds))
    lines = [f"**Incomplete: {n_missing} of {len(plan.runs)} runs of the {plan.profile} profile are not in the "
             f"store**, so the tables and figures below show only the runs that are. Missing:"]
    lines += [f"- {label}: {m} of {n}" for label, (m, n) in missing.items()]
    lines.append(f"\nCompute them with `python -m dannlib sweep --profile {plan.profile} --only "
                 f"{plan.notebook[:2]}{seed_arg}` and run this notebook again.")
    return "\n".join(lines)


def records(notebook: str, profile: str, runs) -> list[dict]:
    """Flat records (one per run) for the tables: the run's record plus its tags, the
    notebook and the profile."""
    return [run.record(**tags, notebook=NOTEBOOKS[notebook[:2]], profile=profile) for tags, run in runs]


def histories(runs, key: str = "method", **match) -> dict[str, list[dict]]:
    """The monitoring histories of ``runs`` (from :func:`fetch`) pooled per value of the tag
    ``key`` (all seeds together, as :func:`dannlib.plotting.plot_method_curves` takes them),
    keeping only runs whose tags match ``match`` (e.g. ``pair="MNIST->USPS"``)."""
    out: dict[str, list[dict]] = {}
    for tags, run in runs:
        if all(tags.get(k) == v for k, v in match.items()):
            out.setdefault(tags[key], []).extend(run.history)
    return out
