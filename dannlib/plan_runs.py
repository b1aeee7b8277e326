"""The runs of notebooks 01-06 under each profile (the plan builders that
:func:`dannlib.plan.plan` dispatches to; 07's and 08's are in :mod:`dannlib.plan_grids`), and
:class:`Planned`, one planned run. A builder takes ``(profile, seeds)`` and returns
``(settings, seeds, [Planned, ...])``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .grids import ADDA_PAPER_STEPS, SELECTED, grid_config
from .store import RunSpec, digits_data, toy_data


@dataclass(frozen=True)
class Planned:
    """One run of a plan: its spec and ``tags`` for the tables (the toy, the pair, the row's label)."""

    spec: RunSpec
    tags: dict = field(default_factory=dict, hash=False, compare=False)


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


# -- 05's and 06's rows at 07's selected settings ---------------------------------------------
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
