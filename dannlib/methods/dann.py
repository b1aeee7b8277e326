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

Several seeds can train together through ``torch.func`` (``together=True``): the parameters
of K independently initialised networks are stacked, the loss gradient is
``vmap(grad(loss))``, and the stacked tensors are updated by the same ``torch.optim``
optimiser (SGD and Adam are elementwise, so stacking changes nothing).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..training import Domain, Method
from ..utils import check_choice, seeded
from .common import NETWORKS, TrainConfig, autocast, dann_objective, set_lr, use_channels_last

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
    """Source-only / domain-only / DANN training of one network per seed (see module doc)."""

    Config = DANNConfig
    supports_together = True

    @classmethod
    def steps_per_second(cls, config: DANNConfig, data: dict) -> float:
        return 87 if config.mode == "source_only" else 57  # source-only: the source batch alone, no domain head

    def __init__(self, config: DANNConfig, source: Domain, target: Domain | None, seeds, name: str | None = None):
        super().__init__(config, source, target, seeds, name=name or config.mode)
        config = self.config
        self.uses_target = config.mode != "source_only"
        self.device = source.x.device
        build = NETWORKS[config.network]
        nets = []
        for s in self.seeds:
            with seeded(s):
                nets.append(build(source, target).to(self.device))  # input mean: both domains' images, no labels
        self.nets = nets
        if self.batched:
            params, buffers = torch.func.stack_module_state(nets)
            self.params = {k: v.detach() for k, v in params.items()}
            self.buffers = buffers
            self._base = copy.deepcopy(nets[0]).to("meta")
            trainable = list(self.params.values())
            self._grad_fn = torch.func.vmap(torch.func.grad(self._functional_loss, has_aux=True),
                                            in_dims=(0, 0, 0, 0, 0 if self.uses_target else None, None))
        else:
            trainable = list(nets[0].parameters())
            use_channels_last(config, nets[0], self.device)
        self.optimizer = config.make_optimizer(trainable)

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
    def _functional_loss(self, params, buffers, xs, ys, xt, lambda_):
        net = lambda x, lam=None: torch.func.functional_call(self._base, (params, buffers), (x, lam))
        return dann_objective(net, xs, ys, xt, lambda_, self.config.mode)

    def step(self, xs, ys, xt, p: float) -> dict:
        lam = self.grl_lambda(p)
        set_lr(self.optimizer, self.config.lr_at(p))
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.config.precision, self.device):
            if self.batched:
                grads, parts = self._grad_fn(self.params, self.buffers, xs, ys, xt, lam)
                for name, prm in self.params.items():
                    prm.grad = grads[name]
            else:
                total, parts = dann_objective(self.nets[0], xs, ys, xt, lam, self.config.mode)
                total.backward()
        self.optimizer.step()
        return parts

    # -- inference ---------------------------------------------------------------------
    def _sync_nets(self) -> None:
        """Copy the stacked parameters back into the per-seed modules (batched runs)."""
        if self.batched:
            with torch.no_grad():
                for i, net in enumerate(self.nets):
                    for name, prm in net.named_parameters():
                        prm.copy_(self.params[name][i])

    def train(self, mode: bool = True):
        for n in self.nets:
            n.train(mode)
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if not self.batched:
            return self.nets[0](x)
        f = torch.func.vmap(lambda p, b: torch.func.functional_call(self._base, (p, b), (x,)))
        return f(self.params, self.buffers)

    def modules(self, i: int) -> dict[str, nn.Module]:
        self._sync_nets()
        return {"net": self.nets[i]}
