"""The method registry and the one way to train a registered method: ``train("dann", source, target,
seeds=[0, 1], steps=1000)`` gives one RunResult per seed. Adding a method: one module with a config
dataclass and a :class:`dannlib.training.Method` subclass, and one line in :data:`METHODS`."""
from __future__ import annotations

from dataclasses import asdict, fields

from ..training import Domain, Method, RunResult, check_domains
from ..utils import check_choice, check_seeds
from .adda import ADDA, ADDAConfig, SourcePretrain
from .cdan import CDAN
from .dann import DANN, DANNConfig
from .iimt import ABLATIONS, IIMT, IIMTConfig

#: name -> (method class, fixed settings of its Config)
METHODS: dict[str, tuple[type[Method], dict]] = {
    "source_only": (DANN, {"mode": "source_only"}),
    "train_on_target": (DANN, {"mode": "source_only"}),  # an oracle: the labelled target set as the source
    "domain_only": (DANN, {"mode": "domain_only"}),
    "dann": (DANN, {"mode": "dann"}),
    "dann_deep": (DANN, {"mode": "dann", "network": "toy_deep"}),
    # a stated deviation from the paper: Adam at a constant 1e-3 instead of SGD + eq. 7
    "dann_adam": (DANN, {"mode": "dann", "optimizer": "adam", "lr": 1e-3, "lr_schedule": "constant"}),
    "adda_pretrain": (SourcePretrain, {}),
    "adda_gan": (ADDA, {"mapping_loss": "gan"}),
    "adda_minimax": (ADDA, {"mapping_loss": "minimax"}),
    "adda_confusion": (ADDA, {"mapping_loss": "confusion"}),
    "dann_lenet": (ADDA, {"stage2": "dann"}),   # DANN on ADDA's network, recipe and budget
    **{name: (IIMT, dict(fixed)) for name, fixed in ABLATIONS.items()},
    "cdan": (CDAN, {}),  # conditional adversarial (Long et al. 2018); CDAN+E: entropy=True
    # the speedrun cell of dann_study.grids.SPEEDRUN (two minutes of one core), as speedrun_config gives it
    "dann_speedrun": (DANN, {"mode": "dann", "network": "digits_in_bn", "precision": "bf16", "steps": 5000,
                             "eval_every": 1250, "optimizer": "sgd", "lr": 0.01, "lr_schedule": "annealed"}),
}

#: methods whose "source" is the labelled target training set (upper bounds, not adaptation)
ORACLES = ("train_on_target",)


def make_config(method: str, **overrides):
    """The config of a registered method with ``overrides`` applied (ValueError on an unknown one, or on settings of
    the config's ``IDENTITY`` that make it another registered method's run, which would be stored under this name)."""
    check_choice("method", method, METHODS)
    cls, fixed = METHODS[method]
    names = [f.name for f in fields(cls.Config)]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise ValueError(f"unknown {cls.Config.__name__} field(s) {unknown} for method {method!r}; "
                         f"allowed: {', '.join(names)}")
    identity = {k: fixed.get(k, getattr(cls.Config, k)) for k in getattr(cls.Config, "IDENTITY", ())}
    if changed := {k: v for k, v in overrides.items() if k in identity and v != identity[k]}:
        wanted = {**identity, **changed}  # a combination no method registers (e.g. 08's controls) is allowed
        if others := [m for m, (c, f) in METHODS.items() if c is cls and m != method
                      and all(f.get(k, getattr(cls.Config, k)) == v for k, v in wanted.items())]:
            raise ValueError(f"{changed} would make a run of {method!r} (which has {identity}) another registered "
                             f"method's, stored under the wrong name: use {', '.join(map(repr, others))}")
    return cls.Config(**{**fixed, **overrides}).validate()


def train(method: str, source: Domain, target: Domain | None, *, seeds=(0,), config=None,
          eval_sets: dict[str, Domain] | None = None, progress: bool = True, monitor_size: int = 2000,
          pretrained=None, **overrides) -> list[RunResult]:
    """Train ``method`` on ``source`` -> ``target``: one :class:`~dannlib.training.RunResult` per seed.
    ``config`` (the method's config dataclass) and/or ``overrides`` set the settings; ``monitor_size``:
    samples of each evaluation set for the curves; ``pretrained`` (ADDA): the results of the runs it
    starts from. Only ``eval_sets`` see the target's labels."""
    check_choice("method", method, METHODS)
    cls, fixed = METHODS[method]
    seeds = check_seeds(seeds)
    if config is not None and not isinstance(config, cls.Config):
        raise ValueError(f"config must be a {cls.Config.__name__} for method {method!r}, got {type(config).__name__}")
    cfg = make_config(method, **{**(asdict(config) if config is not None else {}), **overrides})
    if config is not None:
        contradicted = {k: getattr(config, k) for k, v in fixed.items() if getattr(cfg, k) != v}
        if contradicted:
            raise ValueError(f"config contradicts method {method!r}, which fixes {fixed}; got {contradicted}: "
                             f"build it with make_config({method!r}, ...) or pick the method that matches")
    check_domains(source, target, eval_sets)  # before any network is built or stage trained
    target = target.unlabelled() if target is not None else None
    if pretrained is not None and not cls.accepts_pretrained:
        raise ValueError(f"pretrained= is for the ADDA family, not {method!r}")
    return cls.run(cfg, source, target, seeds, eval_sets=eval_sets, progress=progress, name=method,
                   monitor_size=monitor_size, **({"pretrained": pretrained} if pretrained is not None else {}))


__all__ = ["METHODS", "ORACLES", "make_config", "train", "DANN", "DANNConfig", "ADDA", "ADDAConfig", "SourcePretrain",
           "IIMT", "IIMTConfig"]
