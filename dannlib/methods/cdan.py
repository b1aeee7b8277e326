"""CDAN: conditional domain adversarial networks (Long et al., NeurIPS 2018).

The domain classifier sees the features ``f`` through the reversal layer, conditioned on the
prediction ``g = softmax(G_y(f))`` (a constant) by the multilinear map ``T(f, g) = f ⊗ g``
(``d_f * n`` inputs) or, above 4,096 inputs (sec. 3.3), ``(f R_f) ⊙ (g R_g) / sqrt(d)`` with fixed
Gaussian ``R_f (d_f, d)``, ``R_g (n, d)``. CDAN+E weighs each sample's domain loss by ``1 +
exp(-H(g))`` (no gradient, as in tllib). Otherwise DANN's recipe and domain loss; ours: the
domain head has DANN's digits shape (hidden 100, then 1 logit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..grl import grad_reverse
from ..networks import _mlp
from ..training import Domain
from .common import NetMethod, TrainConfig, _full, descend, domain_objective

MULTILINEAR_LIMIT = 4096  #: above this many multilinear inputs "auto" is randomised (sec. 3.3)


@dataclass
class CDANConfig(TrainConfig):
    """DANN's recipe plus ``conditioning`` ("auto": randomised above :data:`MULTILINEAR_LIMIT`
    inputs), ``random_dim`` (``d``), ``entropy`` (CDAN+E), ``hidden`` (the domain head's width)."""

    RULES = {**TrainConfig.RULES, "conditioning": ("auto", "multilinear", "randomized"), "random_dim": "count",
             "hidden": "count", "entropy": "flag"}

    conditioning: str = "auto"
    random_dim: int = 1024
    entropy: bool = False
    hidden: int = 100


class MultilinearMap(nn.Module):
    """``T(f, g)``: ``f (N, d_f)``, ``g (N, n)`` -> ``(N, d_f * n)`` or ``(N, d)`` (randomised:
    fixed buffers ``R_f``, ``R_g`` drawn at construction)."""

    def __init__(self, d_f: int, n: int, randomized: bool, d: int):
        super().__init__()
        self.randomized = randomized
        if randomized:
            self.register_buffer("R_f", torch.randn(d_f, d))
            self.register_buffer("R_g", torch.randn(n, d))
        self.out_features = d if randomized else d_f * n

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.randomized:
            return (f @ self.R_f.to(f.dtype)) * (g @ self.R_g.to(g.dtype)) / math.sqrt(self.R_f.shape[1])
        return (f.unsqueeze(2) * g.unsqueeze(1)).flatten(1)


def entropy_weight(g: torch.Tensor) -> torch.Tensor:
    """CDAN+E's weights ``1 + exp(-H(g))``, ``H`` the entropy of each row of ``g (N, n)``; no gradient."""
    g = g.detach()
    h = -(g * torch.log(g.clamp_min(1e-12))).sum(-1)
    return 1 + torch.exp(-h)


class CDAN(NetMethod):
    """CDAN / CDAN+E: one network, map and conditional domain classifier per seed."""

    Config = CDANConfig

    @classmethod
    def steps_per_second(cls, config: CDANConfig, data: dict) -> float:
        """DANN's 57 scaled by the step times of benchmarks/pool_relu.py's first run (fp32, one thread, 2026-12-03
        07:33 UTC; benchmarks/README.md): 10.2 ms against CDAN's 14.2 (the randomised map, its wider domain head)."""
        return 57 * 10.2 / 14.2

    def __init__(self, config: CDANConfig, source: Domain, target: Domain, seeds, name: str | None = None):
        self.maps, self.discs = [], []
        super().__init__(config, source, target, seeds, name=name)

    def heads(self, net, source: Domain) -> list:
        c, n_classes = self.config, max(10 if source.x.ndim == 4 else 2, source.n_classes)
        with torch.no_grad():  # the feature size, in eval mode: no batch-norm statistics or dropout draws change
            net.eval()
            d_f = net.features(source.x[:2].to(self.device)).flatten(1).shape[1]
            net.train()
        randomized = c.conditioning == "randomized" or (c.conditioning == "auto"
                                                        and d_f * n_classes > MULTILINEAR_LIMIT)
        self.maps.append(MultilinearMap(d_f, n_classes, randomized, c.random_dim).to(self.device))
        self.discs.append(_mlp([self.maps[-1].out_features, c.hidden, 1]).to(self.device))
        net.domain_classifier = None  # DANN's unconditional head is not used
        return list(self.discs[-1].parameters())

    def objective(self, i: int, xs, ys, xt, p: float):
        """CDAN's loss of one step for seed index ``i``: ``(total, parts)``."""
        net, ns = self.nets[i], xs.shape[0]
        f = net.features(torch.cat([xs, xt])).flatten(1)
        logits = _full(net.label_predictor(f))
        label_loss = F.cross_entropy(logits[:ns], ys)
        g = torch.softmax(logits, -1).detach()
        h = self.maps[i](_full(grad_reverse(f, self.config.grl_lambda_at(p))), g)
        weight = entropy_weight(g) if self.config.entropy else None
        domain_loss, domain_acc = domain_objective(self.discs[i](h).squeeze(-1), ns, weight)
        return label_loss + domain_loss, {"label_loss": label_loss.detach(), "domain_loss": domain_loss.detach(),
                                          "domain_acc": domain_acc}

    def step_one(self, i, xs, ys, xt, p: float) -> dict:
        return descend([self.optimizers[i]], *self.objective(i, xs, ys, xt, p))

    def modules(self, i: int) -> dict[str, nn.Module]:
        return {"net": self.nets[i], "discriminator": self.discs[i], "map": self.maps[i]}
