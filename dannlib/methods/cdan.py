"""CDAN: conditional domain adversarial networks (Long et al., NeurIPS 2018, "Conditional
adversarial domain adaptation").

DANN's domain classifier sees the features ``f`` only; CDAN's sees ``f`` *conditioned on* the
classifier's prediction ``g = softmax(G_y(f))``, through the multilinear map

- ``T(f, g) = f ⊗ g`` (the outer product, flattened: ``d_f * n_classes`` inputs), or
- its randomised form ``T(f, g) = (f R_f) ⊙ (g R_g) / sqrt(d)`` with fixed Gaussian
  ``R_f (d_f, d)`` and ``R_g (n_classes, d)`` (never trained), which the paper uses when
  ``d_f * n_classes`` exceeds 4,096; ``d = 1024``.

The gradient reversal layer sits between ``f`` and the map; ``g`` enters the map as a
constant (no gradient flows through the prediction into the map, as in the authors' code).
CDAN+E (``entropy=True``) weighs each sample's domain loss by ``1 + exp(-H(g))``, normalised
within each domain (each domain counting one half, as in the authors' code), so that
confident predictions count more. Here the weights carry no gradient (as in the authors'
later library, tllib); the original code also sends a reversed gradient through the entropy. Everything else is DANN's
recipe (:class:`~dannlib.methods.common.TrainConfig`: network, SGD, eq. 6 and 7), and the
domain loss is DANN's (:func:`~dannlib.methods.common.domain_objective`).

Ours, not the paper's: the conditional domain classifier has DANN's digits head shape (one
hidden layer of 100, then 1 logit) on the map's width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..grl import grad_reverse
from ..networks import _mlp
from ..training import Domain, PerSeedMethod
from ..utils import check_choice, check_positive_int, seeded
from .common import NETWORKS, TrainConfig, _full, domain_objective

CONDITIONINGS = ("auto", "multilinear", "randomized")
#: above this many multilinear inputs the paper switches to the randomised map (Long et al. 2018, sec. 3.3)
MULTILINEAR_LIMIT = 4096


@dataclass
class CDANConfig(TrainConfig):
    """DANN's recipe plus CDAN's conditioning: ``conditioning`` ("auto": the paper's rule,
    randomised above :data:`MULTILINEAR_LIMIT` inputs), ``random_dim`` (``d``), ``entropy``
    (CDAN+E), ``hidden`` (the conditional domain classifier's hidden width)."""

    conditioning: str = "auto"
    random_dim: int = 1024
    entropy: bool = False
    hidden: int = 100

    def validate(self) -> "CDANConfig":
        super().validate()
        check_choice("conditioning", self.conditioning, CONDITIONINGS)
        check_positive_int("random_dim", self.random_dim)
        check_positive_int("hidden", self.hidden)
        if not isinstance(self.entropy, bool):
            raise ValueError(f"entropy must be True or False, got {self.entropy!r}")
        return self


class MultilinearMap(nn.Module):
    """``T(f, g)``: ``f (N, d_f)``, ``g (N, n)`` -> ``(N, d_f * n)`` (outer product) or
    ``(N, d)`` (randomised, fixed buffers ``R_f``, ``R_g`` drawn at construction)."""

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
    """CDAN+E's sample weights ``1 + exp(-H(g))``, ``H`` the entropy of each row of ``g (N, n)``
    (natural log); no gradient."""
    g = g.detach()
    h = -(g * torch.log(g.clamp_min(1e-12))).sum(-1)
    return 1 + torch.exp(-h)


class CDAN(PerSeedMethod):
    """CDAN / CDAN+E (see module doc): one network and one conditional domain classifier per seed."""

    Config = CDANConfig

    def __init__(self, config: CDANConfig, source: Domain, target: Domain, seeds, name: str | None = None):
        super().__init__(config, source, target, seeds, name=name or "cdan")
        c = self.config
        self.device = source.x.device
        n_classes = max(10 if source.x.ndim == 4 else 2, source.n_classes)
        self.nets, self.maps, self.discs, self.optimizers = [], [], [], []
        for s in self.seeds:
            with seeded(s):
                net = NETWORKS[c.network](source, target).to(self.device)
                d_f = net.features(source.x[:2].to(self.device)).flatten(1).shape[1]
                randomized = (c.conditioning == "randomized"
                              or (c.conditioning == "auto" and d_f * n_classes > MULTILINEAR_LIMIT))
                tmap = MultilinearMap(d_f, n_classes, randomized, c.random_dim).to(self.device)
                disc = _mlp([tmap.out_features, c.hidden, 1]).to(self.device)
            net.domain_classifier = None  # DANN's unconditional head is not used
            self.nets.append(net)
            self.maps.append(tmap)
            self.discs.append(disc)
            self.optimizers.append(c.make_optimizer([*net.parameters(), *disc.parameters()]))

    def schedule(self, p: float) -> dict:
        return {"grl_lambda": self.config.grl_lambda_at(p), "lr": self.config.lr_at(p)}

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
        total = label_loss + domain_loss
        return total, {"label_loss": label_loss.detach(), "domain_loss": domain_loss.detach(),
                       "domain_acc": domain_acc}

    def step_one(self, i, xs, ys, xt, p: float) -> dict:
        opt = self.optimizers[i]
        opt.zero_grad(set_to_none=True)
        total, parts = self.objective(i, xs, ys, xt, p)
        total.backward()
        opt.step()
        return parts

    def predict_one(self, i, x):
        return self.nets[i](x)

    def modules(self, i: int) -> dict[str, nn.Module]:
        return {"net": self.nets[i], "discriminator": self.discs[i], "map": self.maps[i]}
