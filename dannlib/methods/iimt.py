"""IIMT: inter- and intra-domain mixup training on top of DANN (Yan et al., 2020, "Improve
unsupervised domain adaptation with mixup training").

On a DANN network (encoder ``f`` = ``features``, classifier ``h`` = ``label_predictor``), per step
with source ``x_s (B, C, S, S)``, one-hot labels ``y_s (B, n)`` and target ``x_t``: pseudo-labels
``q_t`` = the sharpened mean softmax over ``K`` augmentations of ``x_t`` (no gradient); ``lambda' =
max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)`` per sample. Terms: ``inter_mixup`` (``x_st = lambda' x_s +
(1 - lambda') x_t`` against ``lambda' y_s + (1 - lambda') q_t``, soft cross-entropy);
``target_dominated_mixup`` (coefficients swapped, squared error); ``consistency`` (``|| lambda' f(x_s)
+ (1 - lambda') f(x_t) - f(x_st) ||^2``); ``intra_source`` / ``intra_target`` (each domain mixed with a
permutation of itself; cross-entropy / squared error on pseudo-labels); ``adversarial`` (DANN's eq.
1/5 loss, :func:`~dannlib.methods.common.dann_objective`, which also gives the source label loss).
Each term is a per-sample loss averaged over the batch: summed over the classes, the consistency
averaged over the feature dimensions. The target-involving terms are weighted by a linear ramp
(0 at p = 0 to ``ramp_max`` at ``ramp_end``); the source terms weigh 1. A switched-off term is
not computed, but every random draw is made, so an ablation sees the same draws as the full method.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..schedules import linear_ramp
from ..training import Domain
from ..utils import check_number, make_generator
from .common import NetMethod, TrainConfig, _full, dann_objective

COMPONENTS = ("inter_mixup", "target_dominated_mixup", "consistency", "intra_source", "intra_target",
              "adversarial")


def mixup_coefficient(alpha: float, generator: torch.Generator, shape=(1,)) -> torch.Tensor:
    """``lambda' = max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)``: float32 of ``shape`` in [0.5, 1] on
    the generator's device, drawn as ``G1 / (G1 + G2)``, ``G_i ~ Gamma(alpha)`` from ``generator``."""
    check_number("alpha", alpha)
    conc = torch.full((2, *shape), float(alpha), dtype=torch.float64, device=generator.device)
    g = torch._standard_gamma(conc, generator=generator)
    lam = g[0] / (g[0] + g[1]).clamp_min(1e-300)
    return torch.maximum(lam, 1.0 - lam).float()


def sharpen(q: torch.Tensor, T: float) -> torch.Tensor:
    """``q^(1/T)`` renormalised over the last axis of ``q (B, n)`` (MixMatch's sharpening), ``T`` in
    (0, 1]: 1 the identity on normalised rows, -> 0 the arg-max's one-hot. In log space."""
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not (0 < T <= 1):
        raise ValueError(f"T must lie in (0, 1], got {T!r}")
    return torch.softmax(torch.log(q.clamp_min(1e-30)) / T, dim=-1)


def mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """``lam * a + (1 - lam) * b``; ``lam`` a scalar or ``(B,)``, broadcast over ``a, b (B, ...)``."""
    if isinstance(lam, torch.Tensor) and lam.ndim == 1:
        lam = lam.reshape(-1, *([1] * (a.ndim - 1)))
    return lam * a + (1 - lam) * b


def consistency_loss(f, xs: torch.Tensor, xt: torch.Tensor, lam: torch.Tensor | float,
                     features: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``|| lam f(x_s) + (1 - lam) f(x_t) - f(lam x_s + (1 - lam) x_t) ||^2 / D`` per sample, mean
    over the batch; zero for affine ``f``. ``features``: precomputed ``(f(x_s), f(x_t), f(x_st))``, ``(B, D)``."""
    fs, ft, fst = features if features is not None else (f(xs), f(xt), f(mix(xs, xt, lam)))
    return (mix(fs, ft, lam) - fst).pow(2).flatten(1).mean(1).mean()


def soft_squared_error(probs: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``sum_c (p_c - q_c)^2`` per sample (in [0, 2]), mean over the batch; ``probs, q (B, n)``."""
    return (probs - q).pow(2).sum(-1).mean()


def soft_cross_entropy(logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``-sum_c q_c log softmax(logits)_c``, mean over the batch; ``logits, q (B, n)``."""
    return -(q * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def augment(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2,
            contrast: float = 0.2, brightness: float = 0.1) -> torch.Tensor:
    """Per-image augmentation of ``x (B, C, S, S)`` in [0, 1], drawn from ``generator``: a
    translation by up to ``max_shift`` pixels (edges replicated), contrast scaled by a factor in
    ``[1 - contrast, 1 + contrast]`` about the mean, brightness shifted by up to ``+- brightness``."""
    b, c, h, w = x.shape
    dev, gdev, pad = x.device, generator.device, max_shift
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator, device=gdev).to(dev)
    u = torch.rand((b, 2), generator=generator, device=gdev).to(dev)
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    rows = (torch.arange(h, device=dev)[None, :] + pad - shifts[:, :1])  # (B, H)
    cols = (torch.arange(w, device=dev)[None, :] + pad - shifts[:, 1:])  # (B, W)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    factor = (1 - contrast + 2 * contrast * u[:, 0]).view(b, 1, 1, 1)
    shift = (brightness * (2 * u[:, 1] - 1)).view(b, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * factor + mean + shift).clamp(0.0, 1.0)


@dataclass
class IIMTConfig(TrainConfig):
    """The shared recipe plus IIMT's settings; K, T and alpha are ours (the paper's were not available)."""

    #: the ablation switches: settings that make it another registered method (:data:`ABLATIONS`)
    IDENTITY = ("inter_mixup", "target_dominated_mixup", "consistency", "intra_source", "intra_target", "adversarial")
    RULES = {**TrainConfig.RULES, "network": ("digits", "vada_small"), "K": "count", "T": "(0, 1]",
             "ramp_end": "(0, 1]", "alpha": "rate", "grad_clip": "rate", "max_shift": "[0, inf)",
             **{name: "[0, inf)" for name in ("ramp_max", "w_inter", "w_target_mix", "w_consistency",
                                              "w_intra_source", "w_intra_target", "contrast", "brightness")},
             **{name: "flag" for name in COMPONENTS}}

    K: int = 2
    T: float = 0.5
    alpha: float = 2.0
    ramp_end: float = 0.5              # target-involving weights reach ramp_max at p = ramp_end
    ramp_max: float = 1.0
    inter_mixup: bool = True
    target_dominated_mixup: bool = True
    consistency: bool = True
    intra_source: bool = True
    intra_target: bool = True
    adversarial: bool = True
    w_inter: float = 1.0
    w_target_mix: float = 1.0
    w_consistency: float = 1.0
    w_intra_source: float = 1.0
    w_intra_target: float = 1.0
    max_shift: int = 2
    contrast: float = 0.2
    brightness: float = 0.1
    # Ours, not the paper's: the whole gradient's L2 norm clipped to grad_clip (None: never); 10 is
    # about the 99th percentile of healthy runs' norms (benchmarks/README.md, "IIMT: gradient clipping")
    grad_clip: float | None = 10.0


#: the ablations: one component removed at a time
ABLATIONS: dict[str, dict] = {
    "iimt": {},
    "iimt_no_inter": {"inter_mixup": False},
    "iimt_no_target_mix": {"target_dominated_mixup": False},
    "iimt_no_consistency": {"consistency": False},
    "iimt_no_intra": {"intra_source": False, "intra_target": False},
    "iimt_no_adversarial": {"adversarial": False},
}


class IIMT(NetMethod):
    """IIMT, one network per seed; each seed's ``torch.Generator`` (seed ``10_007 * seed + 17``)
    draws the augmentations, mixup coefficients and permutations."""

    Config = IIMTConfig

    @classmethod
    def steps_per_second(cls, config: IIMTConfig, data: dict) -> float:
        return 14 if data.get("channels", 3) == 3 else 24  # augmentations and mixes cost more on 3 channels

    def __init__(self, config: IIMTConfig, source: Domain, target: Domain, seeds, name: str | None = None):
        super().__init__(config, source, target, seeds, name=name)
        self.n_classes = max(10, source.n_classes)
        self.generators = [make_generator(10_007 * s + 17, self.device) for s in self.seeds]

    def ramp(self, p: float) -> float:
        return linear_ramp(p, self.config.ramp_end, self.config.ramp_max)

    def schedule(self, p: float) -> dict:
        return {**super().schedule(p), "ramp": self.ramp(p)}

    def objective(self, net: nn.Module, xs, ys, xt, p: float, generator: torch.Generator):
        """The IIMT loss of one step for one network: ``(total, parts)``."""
        c, b = self.config, xs.shape[0]
        augs = [augment(xt, generator, c.max_shift, c.contrast, c.brightness) for _ in range(c.K)]
        lam, lam_s, lam_t = (mixup_coefficient(c.alpha, generator, (b,)).to(xs.device) for _ in range(3))
        perm_s, perm_t = (torch.randperm(b, generator=generator, device=generator.device).to(xs.device)
                          for _ in range(2))
        with torch.no_grad():
            q_t = sharpen(torch.stack([torch.softmax(_full(net(a)), -1) for a in augs]).mean(0), c.T)
        y1 = F.one_hot(ys, self.n_classes).float()
        w = self.ramp(p)
        total, parts = dann_objective(net, xs, ys, xt, c.grl_lambda_at(p), "dann" if c.adversarial else "source_only")
        x_st = mix(xs, xt, lam)
        if c.inter_mixup or c.consistency:
            f_st = net.features(x_st)
        terms = (  # (switch, logged name, weight, loss), computed in this order
            ("inter_mixup", "inter_loss", w * c.w_inter,
             lambda: soft_cross_entropy(_full(net.label_predictor(f_st)), mix(y1, q_t, lam))),
            ("target_dominated_mixup", "target_mix_loss", w * c.w_target_mix,
             lambda: soft_squared_error(torch.softmax(_full(net(mix(xt, xs, lam))), -1), mix(q_t, y1, lam))),
            ("consistency", "consistency_loss", w * c.w_consistency,
             lambda: consistency_loss(None, xs, xt, lam, features=tuple(
                 _full(t) for t in (net.features(xs), net.features(xt), f_st)))),
            ("intra_source", "intra_source_loss", c.w_intra_source,
             lambda: soft_cross_entropy(_full(net(mix(xs, xs[perm_s], lam_s))), mix(y1, y1[perm_s], lam_s))),
            ("intra_target", "intra_target_loss", w * c.w_intra_target,
             lambda: soft_squared_error(torch.softmax(_full(net(mix(xt, xt[perm_t], lam_t))), -1),
                                        mix(q_t, q_t[perm_t], lam_t))))
        for switch, key, weight, term in terms:
            if getattr(c, switch):
                loss = term()
                total = total + weight * loss
                parts[key] = loss.detach()
        parts["total_loss"] = total.detach()
        parts["pseudo_label_max"] = q_t.max(-1).values.mean()
        return total, parts

    def step_one(self, i, xs, ys, xt, p: float) -> dict:
        self.optimizers[i].zero_grad(set_to_none=True)
        total, parts = self.objective(self.nets[i], xs, ys, xt, p, self.generators[i])
        total.backward()
        clip = self.config.grad_clip  # the norm before clipping is logged; clip None scales by exactly 1
        norm = torch.nn.utils.clip_grad_norm_(self.nets[i].parameters(), math.inf if clip is None else clip).detach()
        parts["grad_norm"] = norm
        if clip is not None:  # its window mean: the fraction of steps clipped
            parts["clipped"] = (norm > clip).float()
        self.optimizers[i].step()
        return parts
