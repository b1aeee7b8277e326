"""IIMT: inter- and intra-domain mixup training on top of DANN (Yan et al., 2020,
"Improve unsupervised domain adaptation with mixup training").

One network, the DANN digits network (:func:`dannlib.networks.digits_net`: encoder ``f`` =
``features``, classifier ``h`` = ``label_predictor``, domain classifier behind the gradient
reversal layer). Per step, with a source batch ``x_s (B, C, S, S)``, labels ``y_s`` (one-hot
``(B, n)``) and a target batch ``x_t``:

- pseudo-labels: ``q_t`` = mean softmax over ``K`` random augmentations of ``x_t``
  (:func:`augment`), sharpened ``q^(1/T)`` and renormalised (:func:`sharpen`); no gradient;
- ``lambda' = max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)``, one per sample
  (:func:`mixup_coefficient`);
- inter-domain mixup (``inter_mixup``): ``x_st = lambda' x_s + (1 - lambda') x_t``,
  ``q_st = lambda' y_s + (1 - lambda') q_t``, soft cross-entropy;
- target-dominated mixup (``target_dominated_mixup``): coefficients swapped, squared error
  between softmax and soft label (more tolerant of wrong pseudo-labels);
- consistency (``consistency``): ``|| lambda' f(x_s) + (1 - lambda') f(x_t) - f(x_st) ||^2``;
- intra-domain mixup, label level (input mixed, labels mixed, no feature term):
  ``intra_source`` (source with a permutation of itself, soft cross-entropy) and
  ``intra_target`` (target with a permutation of itself, pseudo-labels, squared error);
- domain adversarial loss (``adversarial``): DANN's eq. 1/5 loss through
  :func:`dannlib.methods.common.dann_objective`, lambda from eq. 6; it also supplies the
  source label loss (with ``adversarial`` off: the plain source cross-entropy).

Scale. The paper weighs every term 1 and tunes only the maximum of the ramp on the
target-involving terms; that means what it says only if every term is a per-sample loss on
one scale. Here each term is a per-sample quantity averaged over the batch: cross-entropies
and squared errors between class distributions are *summed over the classes* (both are
divergences between two distributions; the squared error lies in [0, 2]), and the feature
consistency is *averaged over the feature dimensions* (features are not a distribution; a
sum would grow with the layer's width, 768 here).

Weights: the target-involving terms (inter, target-dominated, consistency, intra-target)
rise linearly from 0 at p = 0 to ``ramp_max`` at ``p = ramp_end``
(:func:`dannlib.schedules.linear_ramp`); the source label loss and intra-source weigh 1.
A switched-off component is not computed at all (exactly zero gradient); every random draw
is made whatever the switches, so an ablation sees the same batches, augmentations and
coefficients as the full method.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..schedules import linear_ramp
from ..training import Domain, PerSeedMethod
from ..utils import check_positive_int, check_positive_number, make_generator, seeded
from .common import NETWORKS, TrainConfig, _full, dann_objective

COMPONENTS = ("inter_mixup", "target_dominated_mixup", "consistency", "intra_source", "intra_target",
              "adversarial")


# -- pure helpers ------------------------------------------------------------------------
def mixup_coefficient(alpha: float, generator: torch.Generator, shape=(1,)) -> torch.Tensor:
    """``lambda' = max(l, 1 - l)`` with ``l ~ Beta(alpha, alpha)``, a float32 tensor of
    ``shape`` in [0.5, 1] on the generator's device. Beta drawn as ``G1 / (G1 + G2)`` with
    ``G_i ~ Gamma(alpha)`` from ``generator`` (torch's Beta sampler takes no generator)."""
    check_positive_number("alpha", alpha)
    shape = tuple(shape) if not isinstance(shape, int) else (shape,)
    device = generator.device
    conc = torch.full((2, *shape), float(alpha), dtype=torch.float64, device=device)
    g = torch._standard_gamma(conc, generator=generator)
    lam = g[0] / (g[0] + g[1]).clamp_min(1e-300)
    return torch.maximum(lam, 1.0 - lam).float()


def sharpen(q: torch.Tensor, T: float) -> torch.Tensor:
    """``q^(1/T)`` renormalised over the last axis (MixMatch-style sharpening). ``q (B, n)``
    non-negative rows; ``T`` in (0, 1]: T = 1 is the identity (on normalised rows), T -> 0
    approaches the one-hot of the arg-max. Computed in log space for small T."""
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not (0 < T <= 1):
        raise ValueError(f"T must lie in (0, 1], got {T!r}")
    return torch.softmax(torch.log(q.clamp_min(1e-30)) / T, dim=-1)


def mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """``lam * a + (1 - lam) * b``; ``lam`` a scalar or ``(B,)``, broadcast over the
    trailing axes of ``a``/``b`` ``(B, ...)``."""
    if isinstance(lam, torch.Tensor) and lam.ndim == 1:
        lam = lam.reshape(-1, *([1] * (a.ndim - 1)))
    return lam * a + (1 - lam) * b


def consistency_loss(f, xs: torch.Tensor, xt: torch.Tensor, lam: torch.Tensor | float,
                     features: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """IIMT's feature consistency, ``|| lam f(x_s) + (1 - lam) f(x_t) - f(lam x_s + (1 - lam) x_t) ||^2``
    per sample, divided by the feature dimension D (a per-feature mean: the term's size does
    not grow with the layer's width), then averaged over the batch. Zero for any affine
    ``f``. ``features`` = precomputed ``(f(x_s), f(x_t), f(x_st))``, each ``(B, D)``."""
    if features is None:
        features = (f(xs), f(xt), f(mix(xs, xt, lam)))
    fs, ft, fst = features
    diff = mix(fs, ft, lam) - fst
    return diff.pow(2).flatten(1).mean(1).mean()


def soft_squared_error(probs: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``sum_c (p_c - q_c)^2`` per sample (the Brier score between two distributions over
    the classes, in [0, 2]), averaged over the batch; ``probs, q (B, n)``. Summed over the
    classes like the cross-entropy, so that both are per-sample losses on one scale
    (``F.mse_loss`` would also average over the n classes, shrinking the term n-fold)."""
    return (probs - q).pow(2).sum(-1).mean()


def soft_cross_entropy(logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``-sum_c q_c log softmax(logits)_c``, mean over the batch; ``logits, q (B, n)``."""
    return -(q * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def augment(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2,
            contrast: float = 0.2, brightness: float = 0.1) -> torch.Tensor:
    """Random per-image augmentation of ``x (B, C, S, S)`` in [0, 1]: an integer
    translation by up to ``max_shift`` pixels in each direction (edges replicated), contrast
    scaled by a factor in ``[1 - contrast, 1 + contrast]`` about the image mean, brightness
    shifted by up to ``+- brightness``, clamped to [0, 1]. Draws from ``generator`` only."""
    b, c, h, w = x.shape
    dev = x.device
    gdev = generator.device
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator, device=gdev).to(dev)
    u = torch.rand((b, 2), generator=generator, device=gdev).to(dev)
    pad = max_shift
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    rows = (torch.arange(h, device=dev)[None, :] + pad - shifts[:, :1])  # (B, H)
    cols = (torch.arange(w, device=dev)[None, :] + pad - shifts[:, 1:])  # (B, W)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    factor = (1 - contrast + 2 * contrast * u[:, 0]).view(b, 1, 1, 1)
    shift = (brightness * (2 * u[:, 1] - 1)).view(b, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * factor + mean + shift).clamp(0.0, 1.0)


# -- config ------------------------------------------------------------------------------
@dataclass
class IIMTConfig(TrainConfig):
    """IIMT's settings on top of the shared recipe (:class:`TrainConfig`). K, T and alpha are
    our choices: the paper's values were not available to us. Each component has a switch
    and a weight."""

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
    # Our stabilisation, not the paper's: the L2 norm of the whole gradient (all parameters)
    # is clipped to ``grad_clip`` before each step (None: never). Under the paper's SGD recipe
    # one MNIST->MNIST-M seed in four ran away at ~2,000 steps without it (the domain loss
    # and the gradient grew together until the network died). 10 is about the 99th
    # percentile of the unclipped gradient norm over the first 2,000 steps of healthy
    # stretches (seeds 0 and 1, median about 3): a label-free statistic of training; most
    # steps are untouched. The measurement: benchmarks/README.md ("IIMT: gradient clipping").
    grad_clip: float | None = 10.0

    def validate(self) -> "IIMTConfig":
        super().validate()
        check_positive_int("K", self.K)
        if self.network not in ("digits", "vada_small"):
            raise ValueError(f"IIMT runs on an image network (network='digits' or 'vada_small'), got {self.network!r}")
        if not (0 < self.T <= 1):
            raise ValueError(f"T must lie in (0, 1], got {self.T}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be a finite number > 0, got {self.alpha}")
        if not (0 < self.ramp_end <= 1):
            raise ValueError(f"ramp_end must lie in (0, 1], got {self.ramp_end}")
        for name in ("ramp_max", "w_inter", "w_target_mix", "w_consistency", "w_intra_source", "w_intra_target",
                     "contrast", "brightness"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        for name in COMPONENTS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {self.max_shift}")
        if self.grad_clip is not None:
            check_positive_number("grad_clip", self.grad_clip,
                                  " (the largest gradient norm a step may take) or None (no clipping)")
        return self


#: The ablations: one component removed at a time.
ABLATIONS: dict[str, dict] = {
    "iimt": {},
    "iimt_no_inter": {"inter_mixup": False},
    "iimt_no_target_mix": {"target_dominated_mixup": False},
    "iimt_no_consistency": {"consistency": False},
    "iimt_no_intra": {"intra_source": False, "intra_target": False},
    "iimt_no_adversarial": {"adversarial": False},
}


class IIMT(PerSeedMethod):
    """IIMT (see module doc) on the DANN digits network, one network per seed.

    Each seed owns a ``torch.Generator`` (seed ``10_007 * seed + 17``) for augmentations,
    mixup coefficients and permutations. ``step`` logs every computed term and the
    ramp weight."""

    Config = IIMTConfig

    @classmethod
    def steps_per_second(cls, config: IIMTConfig, data: dict) -> float:
        return 14 if data.get("channels", 3) == 3 else 24  # augmentations and mixes cost more on 3 channels

    def __init__(self, config: IIMTConfig, source: Domain, target: Domain, seeds, name: str | None = None):
        super().__init__(config, source, target, seeds, name=name or "iimt")
        self.n_classes = max(10, source.n_classes)
        build = NETWORKS[self.config.network]
        self.device = source.x.device
        self.nets, self.optimizers, self.generators = [], [], []
        for s in self.seeds:
            with seeded(s):
                net = build(source, target).to(self.device)
            self.nets.append(net)
            self.optimizers.append(self.config.make_optimizer(net.parameters()))
            self.generators.append(make_generator(10_007 * s + 17, self.device))

    # -- schedules ------------------------------------------------------------------------
    def ramp(self, p: float) -> float:
        return linear_ramp(p, self.config.ramp_end, self.config.ramp_max)

    def schedule(self, p: float) -> dict:
        c = self.config
        return {"grl_lambda": c.grl_lambda_at(p), "lr": c.lr_at(p), "ramp": self.ramp(p)}

    # -- the objective --------------------------------------------------------------------
    def objective(self, net: nn.Module, xs, ys, xt, p: float, generator: torch.Generator):
        """The IIMT loss of one step for one network: ``(total, parts)``."""
        c = self.config
        b = xs.shape[0]
        # every random draw first, whatever the switches
        augs = [augment(xt, generator, c.max_shift, c.contrast, c.brightness) for _ in range(c.K)]
        lam = mixup_coefficient(c.alpha, generator, (b,)).to(xs.device)
        lam_s = mixup_coefficient(c.alpha, generator, (b,)).to(xs.device)
        lam_t = mixup_coefficient(c.alpha, generator, (b,)).to(xs.device)
        perm_s = torch.randperm(b, generator=generator, device=generator.device).to(xs.device)
        perm_t = torch.randperm(b, generator=generator, device=generator.device).to(xs.device)

        with torch.no_grad():
            q_t = sharpen(torch.stack([torch.softmax(_full(net(a)), -1) for a in augs]).mean(0), c.T)
        y1 = F.one_hot(ys, self.n_classes).float()
        w = self.ramp(p)
        total, parts = dann_objective(net, xs, ys, xt, c.grl_lambda_at(p),
                                      "dann" if c.adversarial else "source_only")
        parts = dict(parts)
        x_st = mix(xs, xt, lam)
        if c.inter_mixup or c.consistency:
            f_st = net.features(x_st)
        if c.inter_mixup:
            loss = soft_cross_entropy(_full(net.label_predictor(f_st)), mix(y1, q_t, lam))
            total = total + w * c.w_inter * loss
            parts["inter_loss"] = loss.detach()
        if c.target_dominated_mixup:
            x_ts = mix(xt, xs, lam)
            loss = soft_squared_error(torch.softmax(_full(net(x_ts)), -1), mix(q_t, y1, lam))
            total = total + w * c.w_target_mix * loss
            parts["target_mix_loss"] = loss.detach()
        if c.consistency:
            loss = consistency_loss(None, xs, xt, lam,
                                    features=tuple(_full(t) for t in (net.features(xs), net.features(xt), f_st)))
            total = total + w * c.w_consistency * loss
            parts["consistency_loss"] = loss.detach()
        if c.intra_source:
            loss = soft_cross_entropy(_full(net(mix(xs, xs[perm_s], lam_s))), mix(y1, y1[perm_s], lam_s))
            total = total + c.w_intra_source * loss
            parts["intra_source_loss"] = loss.detach()
        if c.intra_target:
            loss = soft_squared_error(torch.softmax(_full(net(mix(xt, xt[perm_t], lam_t))), -1),
                                      mix(q_t, q_t[perm_t], lam_t))
            total = total + w * c.w_intra_target * loss
            parts["intra_target_loss"] = loss.detach()
        parts["total_loss"] = total.detach()
        parts["pseudo_label_max"] = q_t.max(-1).values.mean()
        return total, parts

    def step_one(self, i, xs, ys, xt, p: float) -> dict:
        opt = self.optimizers[i]
        opt.zero_grad(set_to_none=True)
        total, parts = self.objective(self.nets[i], xs, ys, xt, p, self.generators[i])
        total.backward()
        clip = self.config.grad_clip
        # the norm before clipping, logged either way; with no clipping the gradients are scaled by exactly 1
        norm = torch.nn.utils.clip_grad_norm_(self.nets[i].parameters(), math.inf if clip is None else clip).detach()
        parts["grad_norm"] = norm
        if clip is not None:  # its mean over a logging window: the fraction of steps clipped
            parts["clipped"] = (norm > clip).float()
        opt.step()
        return parts

    def predict_one(self, i, x):
        return self.nets[i](x)

    def modules(self, i: int) -> dict[str, nn.Module]:
        return {"net": self.nets[i]}
