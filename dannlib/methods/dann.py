"""Source-only and DANN (Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016, sec. 5.1).

Modes of one network: ``source_only`` (label loss on the source; "train on target", an
oracle, when the labelled target training set is the source); ``domain_only`` (domain loss
only, reversal switched off: ``grl_lambda = -1``); ``dann`` (eq. 1/5, ``E = L_y(source) +
L_d(source, target)`` through the gradient reversal layer, lambda from eq. 6), also with a
deeper domain classifier (``network="toy_deep"``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..training import Domain
from ..utils import check_seeds
from .common import NetMethod, TrainConfig, dann_objective, descend


@dataclass
class DANNConfig(TrainConfig):
    """The shared recipe plus the mode and the lambda schedule (eq. 6 times ``lambda_max``, or constant)."""

    IDENTITY = ("mode",)  # settings that make it another registered method (make_config refuses them)
    RULES = {**TrainConfig.RULES, "mode": ("source_only", "domain_only", "dann"),
             "lambda_schedule": ("dann", "constant"), "lambda_max": "[0, inf)"}

    mode: str = "dann"
    lambda_schedule: str = "dann"  # eq. 6
    lambda_max: float = 1.0

    def grl_lambda_at(self, p: float) -> float:
        """The GRL's lambda at progress ``p``: ``lambda_max`` times eq. 6, or ``lambda_max`` (constant), or -1
        for ``domain_only`` (reversal switched off: the feature extractor helps G_d)."""
        if self.mode == "domain_only":
            return -1.0
        return self.lambda_max if self.lambda_schedule == "constant" else self.lambda_max * super().grl_lambda_at(p)


class DANN(NetMethod):
    """One network, one seed (:func:`dannlib.methods.train` builds one per seed)."""

    Config = DANNConfig

    #: step rate relative to the paper's fp32 SGD step on the digits network, measured in notebook 09's grid
    #: (2026-12-03, the 2-core VM, 2 workers): bf16 autocast, Adam, the speedrun's networks
    RELATIVE_RATE = {"bf16": 1.40, "adam": 0.90, "digits_in": 0.94, "digits_in_bn": 0.81}

    @classmethod
    def steps_per_second(cls, config: DANNConfig, data: dict) -> float:
        rate = 87 if config.mode == "source_only" else 57  # source-only: the source batch alone, no domain head
        for setting in (config.precision, config.optimizer, config.network):
            rate *= cls.RELATIVE_RATE.get(setting, 1.0)
        return rate

    def __init__(self, config: DANNConfig, source: Domain, target: Domain | None, seeds, name: str | None = None):
        if len(check_seeds(seeds)) > 1:
            raise ValueError(f"DANN trains one seed per object, got seeds {seeds}: build one per seed "
                             "(dannlib.methods.train does)")
        super().__init__(config, source, target, seeds, name=name or config.mode)
        self.uses_target = self.config.mode != "source_only"
        self.optimizer = self.optimizers.pop()

    def step_one(self, i, xs, ys, xt, p: float) -> dict:
        return descend([self.optimizer], *dann_objective(self.nets[i], xs, ys, xt, self.config.grl_lambda_at(p),
                                                         self.config.mode))
