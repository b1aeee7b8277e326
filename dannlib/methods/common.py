"""What the method families share: config checks, the recipe, the network builders and DANN's objective.

The recipe of Ganin & Lempitsky (2015, sec. 5.2; JMLR 2016, sec. 5.2.2): SGD, momentum 0.9, the
learning rate ``mu_p = mu_0 / (1 + alpha p)^beta`` (eq. 7), lambda from eq. 6; or Adam at a constant rate.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import networks
from ..schedules import annealed_lr, grl_lambda
from ..training import Domain, PerSeedMethod
from ..utils import check_choice, check_number, check_positive_int, seeded

PRECISIONS = ("fp32", "bf16")


class Checked:
    """A config dataclass whose :meth:`validate` returns ``self`` or raises a ValueError naming the first field
    of ``RULES`` that breaks its rule: the allowed values (a collection), ``"count"`` (an int >= 1), ``"rate"``
    (a finite number > 0), ``"flag"`` (a bool) or an interval such as ``"[0, 1)"``; ``X | None`` may be None."""

    RULES: dict = {}

    def validate(self):
        optional = {f.name for f in fields(self) if "None" in str(f.type)}
        for name, rule in self.RULES.items():
            v = getattr(self, name)
            if v is None and name in optional:
                continue
            if not isinstance(rule, str):
                check_choice(name, v, rule)
            elif rule == "count":
                check_positive_int(name, v)
            elif rule == "rate":
                check_number(name, v, " or None" if name in optional else "")
            elif rule == "flag":
                if not isinstance(v, bool):
                    raise ValueError(f"{name} must be True or False, got {v!r}")
            else:
                lo, hi = (float(b) for b in rule[1:-1].split(","))
                real = isinstance(v, numbers.Real) and not isinstance(v, bool)
                if not (real and (lo <= v if rule[0] == "[" else lo < v) and (v <= hi if rule[-1] == "]" else v < hi)):
                    raise ValueError(f"{name} must lie in {rule}, got {v!r}")
        return self


def _toy(source: Domain, target: Domain | None, deep: bool, hidden: int = 8) -> nn.Module:
    if source.x.ndim != 2:
        raise ValueError(f"the toy networks take points (N, D); source {source.name!r} has shape "
                         f"{tuple(source.x.shape)}: use network='digits' for images")
    return networks.toy_net(source.x.shape[1], hidden=hidden, n_classes=max(2, source.n_classes),
                            deep_domain_classifier=deep)


def _digits(source: Domain, target: Domain | None, **norms) -> nn.Module:
    if source.x.ndim != 4:
        raise ValueError(f"the digits network takes images (N, C, H, W); source {source.name!r} has shape "
                         f"{tuple(source.x.shape)}: use a toy network for points")
    # the paper's input mean subtraction (no labels involved), or each image standardised (instance_norm)
    both = [source.x] + ([target.x] if target is not None else [])
    mean = None if norms.get("instance_norm") else torch.cat(both).mean(0)
    return networks.digits_net(in_channels=source.x.shape[1], size=source.x.shape[2],
                               n_classes=max(10, source.n_classes), input_mean=mean, **norms)


#: name -> builder(source, target) of a :class:`dannlib.networks.DANNNet`
NETWORKS: dict[str, Callable[[Domain, Domain | None], nn.Module]] = {
    "toy": lambda s, t: _toy(s, t, deep=False),
    "toy_deep": lambda s, t: _toy(s, t, deep=True),
    # the JMLR paper's moons network (Ganin et al. 2016, sec. 5.1.1): 15 hidden units
    "toy_wide": lambda s, t: _toy(s, t, deep=False, hidden=15),
    "toy_wide_deep": lambda s, t: _toy(s, t, deep=True, hidden=15),
    "digits": _digits,
    # the speedrun's candidates (notebook 09): each image standardised per channel, then batch norm too
    "digits_in": lambda s, t: _digits(s, t, instance_norm=True),
    "digits_in_bn": lambda s, t: _digits(s, t, instance_norm=True, batch_norm=True),
    # VADA/DIRT-T's small digit CNN (Shu et al. 2018)
    "vada_small": lambda s, t: networks.vada_small_net(s.x.shape[1], s.x.shape[2], max(10, s.n_classes)),
}


@dataclass
class TrainConfig(Checked):
    """The DANN family's recipe (the paper's digits recipe as defaults); ``batch_size`` per domain;
    ``precision="bf16"``: bfloat16 autocast of the forward pass; ``channels_last`` None: on the CPU."""

    RULES = {"network": NETWORKS, "optimizer": ("sgd", "adam"), "lr_schedule": ("annealed", "constant"),
             "precision": PRECISIONS, "steps": "count", "batch_size": "count", "eval_every": "count", "lr": "rate",
             "gamma": "rate", "momentum": "[0, 1)"}

    network: str = "digits"
    steps: int = 10_000
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.01               # mu_0 of eq. 7 (or Adam's constant rate)
    lr_schedule: str = "annealed"  # eq. 7, or "constant"
    lr_alpha: float = 10.0
    lr_beta: float = 0.75
    momentum: float = 0.9
    weight_decay: float = 0.0
    gamma: float = 10.0            # eq. 6
    precision: str = "fp32"
    channels_last: bool | None = None
    eval_every: int | None = None

    def lr_at(self, p: float) -> float:
        """The learning rate at progress ``p``: eq. 7 or constant."""
        return annealed_lr(p, self.lr, self.lr_alpha, self.lr_beta) if self.lr_schedule == "annealed" else self.lr

    def grl_lambda_at(self, p: float) -> float:
        """The reversal's lambda at progress ``p``: eq. 6, ``2 / (1 + exp(-gamma p)) - 1``."""
        return grl_lambda(p, self.gamma)


class NetMethod(PerSeedMethod):
    """One :data:`NETWORKS` network and :meth:`heads` per seed, built under ``seeded(seed)``, and one optimiser
    of the config's recipe (SGD with momentum, or Adam) for both."""

    def __init__(self, config, source: Domain, target: Domain | None, seeds, name: str | None = None):
        super().__init__(config, source, target, seeds, name=name)
        self.device = source.x.device
        self.nets, self.optimizers, c = [], [], self.config
        for s in self.seeds:
            with seeded(s):
                net = NETWORKS[c.network](source, target).to(self.device)
                heads = self.heads(net, source)  # first: a method may drop one of the network's modules
                params = [*net.parameters(), *heads]
            self.nets.append(net)
            sgd = c.optimizer == "sgd"
            self.optimizers.append(torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
                                   if sgd else torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay))

    def heads(self, net: nn.Module, source: Domain) -> list[nn.Parameter]:
        """Build the method's own modules for ``net`` (seeded); returns their parameters to train."""
        return []

    def schedule(self, p: float) -> dict:
        return {"grl_lambda": self.config.grl_lambda_at(p), "lr": self.config.lr_at(p)}

    def predict_one(self, i, x):
        return self.nets[i](x)

    def modules(self, i: int) -> dict[str, nn.Module]:
        return {"net": self.nets[i]}


def _full(t: torch.Tensor) -> torch.Tensor:
    """Losses are reduced in float32 at least: bf16/fp16 logits (autocast) are upcast."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def descend(optimizers: list[torch.optim.Optimizer], total: torch.Tensor, parts: dict | None = None) -> dict | None:
    """One step of each of ``optimizers`` on the gradient of ``total``; returns ``parts``."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    total.backward()
    for opt in optimizers:
        opt.step()
    return parts


def domain_objective(domain_logits: torch.Tensor, n_source: int, weight: torch.Tensor | None = None):
    """``(loss, acc)``: binary cross-entropy on ``domain_logits (N,)``, ``n_source`` source (label 0)
    then target (label 1), and the batch accuracy. ``weight (N,)`` (CDAN+E, no gradient): normalised
    within each domain, each counting one half; None: the batch mean."""
    logits = _full(domain_logits)
    # domain labels in the logits' dtype (float32 labels would round a float64 loss)
    d = torch.cat([torch.zeros(n_source, device=logits.device, dtype=logits.dtype),
                   torch.ones(logits.shape[-1] - n_source, device=logits.device, dtype=logits.dtype)])
    acc = ((logits > 0).to(d.dtype) == d).float().mean().detach()
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, d), acc
    w = weight.detach().to(logits.dtype)
    w = torch.cat([w[:n_source] / w[:n_source].sum(), w[n_source:] / w[n_source:].sum()]) / 2
    return (w * F.binary_cross_entropy_with_logits(logits, d, reduction="none")).sum(), acc


def dann_objective(net: Callable, xs, ys, xt, lambda_: float, mode: str):
    """``(total, parts)`` of one step, Ganin & Lempitsky 2015, eq. 1/5, with batch means; ``net(x)``:
    class logits ``(B, n)``, ``net(x, lambda_)``: ``(class_logits, domain_logits (B,))`` through the
    reversal. ``mode``: ``"source_only"``, ``"dann"`` (label + domain loss) or ``"domain_only"``."""
    if mode == "source_only":
        label_loss = F.cross_entropy(_full(net(xs)), ys)
        return label_loss, {"label_loss": label_loss.detach()}
    ns = xs.shape[0]
    class_logits, domain_logits = net(torch.cat([xs, xt]), lambda_)
    domain_loss, domain_acc = domain_objective(domain_logits, ns)
    label_loss = F.cross_entropy(_full(class_logits)[:ns], ys)
    total = domain_loss if mode == "domain_only" else label_loss + domain_loss
    return total, {"label_loss": label_loss.detach(), "domain_loss": domain_loss.detach(), "domain_acc": domain_acc}
