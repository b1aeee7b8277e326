"""Source-only and DANN (Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016).

Four modes of one network (the toy study of Ganin et al. 2016, sec. 5.1, and its common
tutorial variants):

- ``source_only``: label loss on the source only (also "train on target", an oracle, when
  the labelled target training set is passed as the source);
- ``domain_only``: the domain loss only, reversal switched off (``grl_lambda = -1``: the
  feature extractor *helps* the domain classifier);
- ``dann``: eq. 1/5, ``E = L_y(source) + L_d(source, target)`` with the gradient reversal
  layer between features and domain classifier, lambda from eq. 6;
- DANN with a deeper domain classifier (``network="toy_deep"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..training import Domain, Method
from ..utils import check_choice, seeded
from .common import NETWORKS, TrainConfig, dann_objective

MODES = ("source_only", "domain_only", "dann")
LAMBDA_SCHEDULES = ("dann", "constant")


@dataclass
class DANNConfig(TrainConfig):
    """Source-only / domain-only / DANN: the shared recipe (:class:`TrainConfig`) plus the
    mode and the lambda schedule (eq. 6 scaled by ``lambda_max``, or constant)."""

    mode: str = "dann"
    lambda_schedule: str = "dann"  # eq. 6
    lambda_max: float = 1.0

    def validate(self) -> "DANNConfig":
        super().validate()
        check_choice("mode", self.mode, MODES)
        check_choice("lambda_schedule", self.lambda_schedule, LAMBDA_SCHEDULES)
        if not (0.0 <= self.lambda_max < float("inf")) or math.isnan(self.lambda_max):
            raise ValueError(f"lambda_max must be a finite number >= 0, got {self.lambda_max}")
        return self


class DANN(Method):
    """Source-only / domain-only / DANN training of one network (see module doc). One seed per
    object: :func:`dannlib.methods.train` builds one for each seed."""

    Config = DANNConfig

    @classmethod
    def steps_per_second(cls, config: DANNConfig, data: dict) -> float:
        return 87 if config.mode == "source_only" else 57  # source-only: the source batch alone, no domain head

    def __init__(self, config: DANNConfig, source: Domain, target: Domain | None, seeds, name: str | None = None):
        super().__init__(config, source, target, seeds, name=name or config.mode)
        if self.batched:
            raise ValueError(f"DANN trains one seed per object, got seeds {self.seeds}: build one per seed "
                             "(dannlib.methods.train does)")
        config = self.config
        self.uses_target = config.mode != "source_only"
        self.device = source.x.device
        with seeded(self.seeds[0]):  # the input mean: both domains' images, no labels
            net = NETWORKS[config.network](source, target).to(self.device)
        self.nets = [net]
        self.optimizer = config.make_optimizer(net.parameters())

    # -- schedules ---------------------------------------------------------------------
    def grl_lambda(self, p: float) -> float:
        if self.config.mode == "domain_only":
            return -1.0  # reversal switched off: the feature extractor helps G_d
        if self.config.lambda_schedule == "constant":
            return self.config.lambda_max
        return self.config.lambda_max * self.config.grl_lambda_at(p)

    def schedule(self, p: float) -> dict:
        return {"grl_lambda": self.grl_lambda(p), "lr": self.config.lr_at(p)}

    # -- the step ----------------------------------------------------------------------
    def step(self, xs, ys, xt, p: float) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        total, parts = dann_objective(self.nets[0], xs, ys, xt, self.grl_lambda(p), self.config.mode)
        total.backward()
        self.optimizer.step()
        return parts

    # -- inference ---------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.nets[0](x)

    def modules(self, i: int) -> dict[str, nn.Module]:
        return {"net": self.nets[i]}
