"""The runs of notebooks 01-06 under each profile (07's and 08's: :mod:`dann_study.plan_grids`), and
:class:`Planned`, one planned run. A builder takes ``(profile, seeds)`` and returns
``(settings, seeds, [Planned, ...])``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dannlib.store import RunSpec, digits_data, toy_data
from dannlib.utils import check_seeds

from .grids import ADDA_PAPER_STEPS, SELECTED, grid_config


@dataclass(frozen=True)
class Planned:
    """One run of a plan: its spec and ``tags`` for the tables (the toy, the pair, the row's label)."""

    spec: RunSpec
    tags: dict = field(default_factory=dict, hash=False, compare=False)


def _seeds(n: int, seeds) -> list[int]:
    return check_seeds(seeds) if seeds is not None else list(range(n))


TOYS = {  # the network of each mode (the deeper domain classifier for dann_deep) and mu_0
    "blobs": {"data": {"n": 300, "seed": 0}, "network": "toy", "network_deep": "toy_deep", "lr": 0.01},
    "moons": {"data": {"n": 300, "seed": 0, "angle": 35.0}, "network": "toy_wide", "network_deep": "toy_wide_deep",
              "lr": 0.05},
}
TOY_MODES = ["source_only", "domain_only", "dann", "dann_deep"]


def _plan_01(profile, seeds):
    n, steps = {"smoke": (2, 100), "quick": (5, 2000), "paper": (10, 10_000)}[profile]
    seeds = _seeds(n, seeds)
    runs = [Planned(RunSpec.make(mode, toy_data(toy, **t["data"]), seed, lr=t["lr"], steps=steps, batch_size=32,
                                 network=t["network_deep" if mode == "dann_deep" else "network"]),
                    {"toy": toy, "method": mode}) for toy, t in TOYS.items() for mode in TOY_MODES for seed in seeds]
    return {"n_seeds": n, "steps": steps, "batch_size": 32, "toys": TOYS}, seeds, runs


def _settings_03(profile):
    paper = {"n_seeds": 5, "methods": ["source_only", "dann", "dann_adam", "train_on_target"],
             "released_methods": ["source_only", "dann", "cdan", "train_on_target"],
             "n_train": None, "n_test": None, "steps": 10_000, "eval_every": 250, "monitor_size": 2000}
    return {"paper": paper, "quick": {**paper, "n_seeds": 3, "methods": ["source_only", "dann", "train_on_target"],
                                      "released_methods": []},
            "smoke": {**paper, "n_seeds": 1, "n_train": 500, "n_test": 500, "steps": 30, "eval_every": 10,
                      "monitor_size": 200}}[profile]


#: The pair label of each MNIST-M target: the study's own build and the released set (Ganin & Lempitsky 2015).
MNIST_M_PAIRS = {"mnist_m": "MNIST->MNIST-M", "mnist_m_released": "MNIST->MNIST-M (released)"}


def _mnist_m_runs(s, seeds, methods, target="mnist_m"):
    data = _pair_data(MNIST_M_PAIRS[target], s["n_train"], s["n_test"])
    return [Planned(RunSpec.make(m, data, seed, monitor_size=s["monitor_size"], steps=s["steps"], batch_size=32,
                                 eval_every=s["eval_every"]), {"pair": MNIST_M_PAIRS[target], "method": m})
            for m in methods for seed in seeds]


def _plan_03(profile, seeds):
    s = _settings_03(profile)
    seeds = _seeds(s["n_seeds"], seeds)
    runs = _mnist_m_runs(s, seeds, s["methods"]) + _mnist_m_runs(s, seeds, s["released_methods"], "mnist_m_released")
    return {**s, "batch_size": 32}, seeds, runs


def _plan_02(profile, seeds):
    """02 builds MNIST-M and trains nothing of its own; its build-gap section reads 03's source-only and DANN networks
    on our build, at 03's seeds (02's ``seeds`` are MNIST-M build seeds, not these)."""
    s = _settings_03(profile)
    seeds = _seeds(s["n_seeds"], None)
    return {**s, "methods": ["source_only", "dann"]}, seeds, _mnist_m_runs(s, seeds, ["source_only", "dann"])


def _plan_04(profile, seeds):
    s = _settings_03(profile)
    seeds = _seeds(s["n_seeds"], seeds)
    extra = {"n_sample": 150, "perplexity": 15} if profile == "smoke" else {"n_sample": 1000, "perplexity": 30}
    return {**s, **extra, "methods": ["source_only", "dann"]}, seeds, _mnist_m_runs(s, seeds, ["source_only", "dann"])


#: ADDA's MNIST <-> USPS protocol (Tzeng et al. 2017, sec. 4.1): 2,000 MNIST and 1,800 USPS
#: training images; every domain on [0, 1], 28 px, one channel.
USPS_PAIRS = {
    "MNIST->USPS": digits_data("mnist", "usps", n_source=2000, n_target=1800, channels=1),
    "USPS->MNIST": digits_data("usps", "mnist", n_source=1800, n_target=2000, channels=1),
}


def _pair_data(pair: str, cap: int | None = None, n_test: int | None = None, **kwargs) -> dict:
    """The data of ``pair`` (a key of :data:`USPS_PAIRS`, at its protocol's sizes, or a value of
    :data:`MNIST_M_PAIRS`, whole) with at most ``cap`` training images a domain and ``n_test`` test images."""
    if pair in USPS_PAIRS and not kwargs:
        return {**USPS_PAIRS[pair], "n_test": n_test, **({"n_source": cap, "n_target": cap} if cap else {})}
    target = next((t for t, p in MNIST_M_PAIRS.items() if p == pair), None)
    if target is None:
        raise ValueError(f"no data for the pair {pair!r} (with {kwargs or 'no options'}); pairs: "
                         f"{', '.join([*USPS_PAIRS, *MNIST_M_PAIRS.values()])}, the USPS pairs without options")
    return digits_data("mnist", target, n_source=cap, n_target=cap, n_test=n_test, **kwargs)


def _plan_05(profile, seeds):
    paper = {"n_seeds": 5, "pairs": list(USPS_PAIRS), "pretrain_steps": 10_000, "steps": 10_000, "batch_size": 128,
             "eval_every": 250, "monitor_size": 2000, "n_test": None,
             "methods": {"adda_gan": 5, "dann_lenet": 5, "adda_minimax": 5, "adda_confusion": 5}}
    s = {"paper": paper,
         "smoke": {**paper, "n_seeds": 1, "pairs": ["MNIST->USPS"], "pretrain_steps": 8, "steps": 8, "batch_size": 32,
                   "eval_every": 4, "monitor_size": 200, "n_test": 200,
                   "methods": {"adda_gan": 1, "adda_minimax": 1, "adda_confusion": 1, "dann_lenet": 1}},
         # quick pre-trains 1,000 steps: from step 1,000 to 2,000 the monitored *source* test
         # accuracy changed by at most 0.002 (3 seeds, both pairs); it keeps `make figures` in budget
         "quick": {**paper, "n_seeds": 3, "pretrain_steps": 1000, "steps": 2000, "batch_size": 64, "eval_every": 100,
                   "methods": {"adda_gan": 3, "dann_lenet": 3}}}[profile]
    seeds = _seeds(s["n_seeds"], seeds)
    common = {k: s[k] for k in ("monitor_size", "pretrain_steps", "steps", "batch_size", "eval_every")}
    pairs = {pair: _pair_data(pair, n_test=s["n_test"]) for pair in s["pairs"]}
    runs = []
    for pair, data in pairs.items():
        for method, n in s["methods"].items():
            for seed in seeds[:n]:
                spec = RunSpec.make(method, data, seed, **common)
                runs.append(Planned(spec, {"pair": pair, "method": method}))
                if method == "adda_gan":  # the source-only row: the same pre-training
                    runs.append(Planned(spec.dependencies()[0], {"pair": pair, "method": "adda_pretrain"}))
    runs += _selected_runs(pairs, seeds[:s["methods"]["adda_gan"]], ["adda_gan"], common, stage2_steps=s["steps"])
    return s, seeds, runs


def _plan_06(profile, seeds):
    from dannlib.methods.iimt import ABLATIONS
    # released_methods: on the released MNIST-M, 03's source-only and DANN runs (the untuned rows) and the selected ones
    paper = {"n_seeds": 5, "pairs": ["MNIST->USPS", "MNIST->MNIST-M", "MNIST->MNIST-M (released)"], "steps": 10_000,
             "eval_every": 250, "monitor_size": 2000, "n_test": None, "n_cap": None,
             "headline": ["source_only", "dann", "iimt"], "ablations": [m for m in ABLATIONS if m != "iimt"],
             "n_ablation_seeds": 3, "released_methods": ["source_only", "dann"]}
    s = {"paper": paper,
         "smoke": {**paper, "n_seeds": 1, "pairs": ["MNIST->USPS"], "steps": 6, "eval_every": 3, "monitor_size": 100,
                   "n_test": 100, "n_cap": 200, "n_ablation_seeds": 1},
         "quick": {**paper, "n_seeds": 3, "pairs": ["MNIST->USPS"], "steps": 2000, "eval_every": 100, "ablations": [],
                   "n_ablation_seeds": 0}}[profile]
    seeds = _seeds(s["n_seeds"], seeds)
    released = MNIST_M_PAIRS["mnist_m_released"]
    pairs = {pair: _pair_data(pair, s["n_cap"], s["n_test"]) for pair in s["pairs"]}
    common = dict(monitor_size=s["monitor_size"], steps=s["steps"], batch_size=32, eval_every=s["eval_every"])
    runs = [Planned(RunSpec.make(method, pairs[pair], seed, **common), {"pair": pair, "method": method})
            for pair in pairs
            for method in (s["released_methods"] if pair == released else s["headline"] + s["ablations"])
            for seed in seeds[:len(seeds) if method in s["headline"] else s["n_ablation_seeds"]]]
    return s, seeds, runs + _selected_runs(pairs, seeds, ["dann", "iimt"], common)


def _selected_runs(pairs: dict, seeds, methods, common: dict, stage2_steps: int = ADDA_PAPER_STEPS) -> list[Planned]:
    """05's and 06's "selected" rows: ``methods`` at :data:`SELECTED`'s setting (07's label-free
    choice) on each pair that has one, tagged ``<method>_selected``; a chosen ADDA stage-2
    length (a paper-profile length) is scaled to the profile's ``stage2_steps``."""
    from .selection_report import chosen_text
    runs = []
    for pair, data in pairs.items():
        for method in methods:
            if (sel := SELECTED.get((method, pair))) is None:
                continue
            config = {**common, **grid_config(method, sel["setting"])}
            if method == "adda_gan":
                config["steps"] = max(1, round(config["steps"] * stage2_steps / ADDA_PAPER_STEPS))
            runs += [Planned(RunSpec.make(method, data, seed, **config),
                             {"pair": pair, "method": f"{method}_selected", "chosen": chosen_text(sel)})
                     for seed in seeds]
    return runs
