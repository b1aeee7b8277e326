"""What the method families share: the optimiser and schedule recipe, the network builders
and DANN's objective (used by DANN and by IIMT, which adds its terms to it).

The recipe of Ganin & Lempitsky (2015, sec. 5.2; JMLR 2016, sec. 5.2.2): SGD with momentum
0.9 and the annealed learning rate ``mu_p = mu_0 / (1 + alpha p)^beta`` (eq. 7), lambda
from eq. 6. Adam at a constant rate is offered as a stated deviation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import networks
from ..schedules import annealed_lr, grl_lambda
from ..training import Domain
from ..utils import check_choice, check_positive_int, check_positive_number

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("annealed", "constant")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """The training recipe shared by DANN-family methods (source-only, DANN, IIMT), each
    setting declared once with its default (the paper's digits recipe).

    ``batch_size`` is per domain (32 source + 32 target images per step, as in the public
    TensorFlow reproduction). ``precision="bf16"`` runs the forward pass under bfloat16
    autocast (weights, optimiser state and the loss reduction stay float32)."""

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
    # Convolution weights in channels_last memory format; None: on the CPU, where mkldnn's
    # convolutions and max-pooling run faster with it (measured in benchmarks/README.md). Same
    # numbers to float tolerance, deterministic under a seed.
    channels_last: bool | None = None
    eval_every: int | None = None

    def validate(self):
        check_choice("network", self.network, NETWORKS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("precision", self.precision, PRECISIONS)
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        for name in ("lr", "gamma"):
            check_positive_number(name, getattr(self, name))
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.eval_every is not None:
            check_positive_int("eval_every", self.eval_every)
        return self

    def lr_at(self, p: float) -> float:
        """The learning rate at progress ``p``: eq. 7 or constant."""
        if self.lr_schedule == "annealed":
            return annealed_lr(p, self.lr, self.lr_alpha, self.lr_beta)
        return self.lr

    def grl_lambda_at(self, p: float) -> float:
        """Eq. 6: ``2 / (1 + exp(-gamma p)) - 1``."""
        return grl_lambda(p, self.gamma)

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


# -- networks ------------------------------------------------------------------------------
def _toy(source: Domain, target: Domain | None, deep: bool, hidden: int = 8) -> nn.Module:
    if source.x.ndim != 2:
        raise ValueError(f"the toy networks take points (N, D); source {source.name!r} has shape "
                         f"{tuple(source.x.shape)}: use network='digits' for images")
    return networks.toy_net(source.x.shape[1], hidden=hidden, n_classes=max(2, source.n_classes),
                            deep_domain_classifier=deep)


def _digits(source: Domain, target: Domain | None) -> nn.Module:
    if source.x.ndim != 4:
        raise ValueError(f"the digits network takes images (N, C, H, W); source {source.name!r} has shape "
                         f"{tuple(source.x.shape)}: use a toy network for points")
    _, c, h, w = source.x.shape
    # Per-pixel mean of the source and target training images (no labels involved).
    xs = [source.x] + ([target.x] if target is not None else [])
    mean = torch.cat(xs).mean(0)
    return networks.digits_net(in_channels=c, size=h, n_classes=max(10, source.n_classes), input_mean=mean)


#: name -> builder(source, target) of a :class:`dannlib.networks.DANNNet`
NETWORKS: dict[str, Callable[[Domain, Domain | None], nn.Module]] = {
    "toy": lambda s, t: _toy(s, t, deep=False),
    "toy_deep": lambda s, t: _toy(s, t, deep=True),
    # The JMLR paper's moons network (Ganin et al. 2016, sec. 5.1.1): 15 hidden units.
    "toy_wide": lambda s, t: _toy(s, t, deep=False, hidden=15),
    "toy_wide_deep": lambda s, t: _toy(s, t, deep=True, hidden=15),
    "digits": _digits,
    # VADA/DIRT-T's small digit CNN (Shu et al. 2018): a candidate for IIMT's network (issue 19)
    "vada_small": lambda s, t: networks.vada_small_net(s.x.shape[1], s.x.shape[2], max(10, s.n_classes)),
}


def _full(t: torch.Tensor) -> torch.Tensor:
    """Losses are reduced in float32 at least: bf16/fp16 logits (autocast) are upcast."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def domain_objective(domain_logits: torch.Tensor, n_source: int, weight: torch.Tensor | None = None):
    """The domain classifier's loss and batch accuracy, ``(loss, acc)``: binary cross-entropy
    on one logit per sample, ``domain_logits (N,)`` = the ``n_source`` source samples (label 0)
    then the target ones (label 1). ``weight (N,)`` (optional, no gradient): per-sample
    weights, normalised to sum to 1 within each domain, each domain then counting one half
    (CDAN's entropy conditioning); None gives the plain batch mean (the same number when the
    two domains have equal batches). The loss is taken in float32 at least."""
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
    """The loss of one step, Ganin & Lempitsky 2015, eq. 1/5, with batch means instead of
    sums.

    ``net(x)`` returns class logits ``(B, n)``; ``net(x, lambda_)`` returns ``(class_logits,
    domain_logits (B,))`` with the reversal inside. Domain labels: source 0, target 1; binary
    cross-entropy on one logit. ``mode``: ``"source_only"`` (label loss), ``"dann"`` (label +
    domain loss) or ``"domain_only"`` (domain loss). Returns ``(total, parts)``; ``parts``
    holds ``label_loss``, ``domain_loss``, ``domain_acc`` (the domain classifier's batch
    accuracy, an adversarial head's own number: not a measure of alignment).
    """
    if mode == "source_only":
        label_loss = F.cross_entropy(_full(net(xs)), ys)
        return label_loss, {"label_loss": label_loss.detach()}
    ns = xs.shape[0]
    class_logits, domain_logits = net(torch.cat([xs, xt]), lambda_)
    class_logits = _full(class_logits)
    domain_loss, domain_acc = domain_objective(domain_logits, ns)
    label_loss = F.cross_entropy(class_logits[:ns], ys)
    total = domain_loss if mode == "domain_only" else label_loss + domain_loss
    return total, {"label_loss": label_loss.detach(), "domain_loss": domain_loss.detach(),
                   "domain_acc": domain_acc.detach()}
