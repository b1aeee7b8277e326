"""ADDA: Adversarial Discriminative Domain Adaptation (Tzeng et al., CVPR 2017), and DANN on its
network and recipe for a fair comparison.

1. :class:`SourcePretrain`: LeNet encoder ``M_s`` and classifier ``C``, cross-entropy on the source.
2. :class:`ADDA`: ``M_t``, an untied copy of ``M_s`` (``M_s``, ``C`` frozen); each step trains the
   discriminator ``D`` (logit ``log P(source)``) on ``L_advD = -E_s log D(M_s x_s) - E_t log(1 -
   D(M_t x_t))`` (eq. 7), then ``M_t`` on :func:`adda_mapping_loss`. ``stage2="dann"``: DANN (eq.
   1/5) instead, encoder tied, ``C`` learning, ``D`` behind the reversal layer, lambda from eq. 6.

A seed whose final ``collapse_window`` shows ``D``'s accuracy stuck at 1 or 0 or the target
predictions on few classes (no target labels used) gets status ``"collapsed"``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import networks
from ..grl import grad_reverse
from ..schedules import grl_lambda
from ..training import Domain, PerSeedMethod, RunResult, fit
from ..utils import check_choice, check_seeds, seeded
from .common import Checked, descend

MAPPING_LOSSES = ("gan", "minimax", "confusion")


@dataclass
class ADDAConfig(Checked):
    """ADDA's settings (the authors' recipe as defaults); ``steps``: stage 2, ``pretrain_steps``:
    stage 1; ``batch_size`` per domain; ``channels_last``: as :class:`~dannlib.methods.common.TrainConfig`'s."""

    IDENTITY = ("mapping_loss", "stage2")  # settings that make it another registered method
    RULES = {**{name: "count" for name in ("pretrain_steps", "steps", "batch_size", "n_classes", "eval_every")},
             "stage2": ("adda", "dann"), "mapping_loss": MAPPING_LOSSES, "encoder": ("lenet",),
             "pretrain_lr": "rate", "lr": "rate", "gamma": "rate", "beta1": "[0, 1)", "beta2": "[0, 1)",
             "collapse_window": "(0, 1]", "collapse_d_acc": "(0.5, 1]", "collapse_entropy": "[0, 1)"}

    pretrain_steps: int = 10_000
    steps: int = 10_000
    batch_size: int = 128
    pretrain_lr: float = 1e-3          # Adam, stage 1
    lr: float = 2e-4                   # Adam, stage 2 (M_t and D)
    beta1: float = 0.5
    beta2: float = 0.999
    stage2: str = "adda"               # "adda" | "dann" (the fair DANN row)
    mapping_loss: str = "gan"          # "gan" (inverted labels) | "minimax" | "confusion"
    gamma: float = 10.0                # eq. 6 of Ganin & Lempitsky, for stage2="dann"
    encoder: str = "lenet"
    n_classes: int = 10
    collapse_window: float = 0.25      # final fraction of the logged records examined
    collapse_d_acc: float = 0.99       # D accuracy >= this (or <= 1 - this) throughout: collapsed
    collapse_entropy: float = 0.35     # normalised entropy of predicted-class histogram below: collapsed
    eval_every: int | None = None
    channels_last: bool | None = None


def adda_mapping_loss(d_logits_target: torch.Tensor, kind: str = "gan") -> torch.Tensor:
    """The target encoder's loss from D's logits ``z (B,)`` on ``M_t(x_t)`` (``D = sigmoid(z)`` =
    P(source)), batch means (Tzeng et al. 2017, sec. 3.2): ``"minimax"``: ``-L_advD``, i.e.
    ``E_t log(1 - D)``; ``"gan"`` (inverted labels): ``-E_t log D``; ``"confusion"``:
    ``-E_t [0.5 log D + 0.5 log(1 - D)]``. With ``log D = -softplus(-z)``, ``log(1 - D) = -softplus(z)``."""
    check_choice("kind", kind, MAPPING_LOSSES)
    log_d, log_1md = -F.softplus(-d_logits_target), -F.softplus(d_logits_target)
    return {"minimax": log_1md, "gan": -log_d, "confusion": -(0.5 * log_d + 0.5 * log_1md)}[kind].mean()


def discriminator_loss(d_logits_source: torch.Tensor, d_logits_target: torch.Tensor):
    """``L_advD`` (batch means) and D's accuracy on both batches (source label 1, target 0)."""
    ls = F.binary_cross_entropy_with_logits(d_logits_source, torch.ones_like(d_logits_source))
    lt = F.binary_cross_entropy_with_logits(d_logits_target, torch.zeros_like(d_logits_target))
    acc = torch.cat([(d_logits_source > 0), (d_logits_target <= 0)]).float().mean()
    return ls + lt, acc


def prediction_entropy(logits: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Entropy of the histogram of predicted classes (argmax of ``logits (B, C)``) over
    ``log(n_classes)``: 1 for a uniform spread, 0 for one class."""
    q = torch.bincount(logits.argmax(-1), minlength=n_classes).double()
    q = q / q.sum()
    return (-(q * torch.log(q.clamp_min(1e-12))).sum() / math.log(n_classes)).float()


def check_source_labels(source: Domain, n_classes: int) -> None:
    """ValueError naming the offending label unless every source label is in ``0..n_classes-1``."""
    if source is None or source.y is None or not len(source.y):
        return
    lo, hi = int(source.y.min()), int(source.y.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"source {source.name!r} has label {lo if lo < 0 else hi}, outside 0..{n_classes - 1}: "
                         f"ADDA's classifier has n_classes={n_classes} outputs; pass "
                         f"n_classes={max(hi + 1, n_classes)} (labels must be 0..n_classes-1)")


class SourcePretrain(PerSeedMethod):
    """ADDA stage 1, one ``(M_s, C)`` per seed built under ``seeded(seed)``; ``predict(x) = C(M_s(x))``."""

    Config = ADDAConfig
    uses_target = False

    def __init__(self, config: ADDAConfig, source: Domain, target: Domain | None, seeds, name: str | None = None):
        check_source_labels(source, config.n_classes)
        super().__init__(config, source, target, seeds, name=name or "adda_pretrain")
        x = source.x
        if x.ndim != 4 or x.shape[2] != x.shape[3]:
            raise ValueError(f"ADDA's LeNet encoder takes images (N, C, S, S), square; source {source.name!r} has "
                             f"shape {tuple(x.shape)}")
        self.encoders, self.classifiers, self.optimizers = [], [], []
        for s in self.seeds:
            with seeded(s):
                enc = networks.LeNetEncoder(in_channels=x.shape[1], size=x.shape[2]).to(x.device)
                clf = nn.Linear(500, self.config.n_classes).to(x.device)
            self.encoders.append(enc)
            self.classifiers.append(clf)
            self.optimizers.append(torch.optim.Adam([*enc.parameters(), *clf.parameters()], lr=self.config.pretrain_lr))

    @classmethod
    def total_steps(cls, config: ADDAConfig) -> int:
        return config.pretrain_steps

    @classmethod
    def cost_steps(cls, config: ADDAConfig, data: dict) -> float:
        """About 45 steps a second at batch 128 (see the base class)."""
        return config.pretrain_steps * (config.batch_size / 128) * 57 / 45

    def schedule(self, p: float) -> dict:
        return {"lr": self.config.pretrain_lr}

    def step_one(self, i, xs, ys, xt, p: float) -> dict:
        loss = F.cross_entropy(self.predict_one(i, xs), ys)
        return descend([self.optimizers[i]], loss, {"label_loss": loss.detach()})

    def predict_one(self, i, x):
        return self.classifiers[i](self.encoders[i](x))

    def modules(self, i: int) -> dict[str, nn.Module]:
        return {"encoder": self.encoders[i], "classifier": self.classifiers[i]}


class ADDA(PerSeedMethod):
    """Stage 2 (ADDA, or DANN with ``stage2="dann"``) from pre-trained ``(encoder, classifier)``
    pairs: ``pretrained`` is a :class:`SourcePretrain` or its :class:`RunResult` list; deep copies
    are trained. D is built under ``seeded(seed + 1_000_003)``. ``predict(x) = C(M_t(x))``. Logs
    ``d_loss``, ``d_acc``, ``mapping_loss`` (ADDA) or ``label_loss`` (DANN), and
    ``target_pred_entropy`` (:func:`prediction_entropy` on the target batch)."""

    Config = ADDAConfig
    accepts_pretrained = True

    @classmethod
    def dependencies(cls, config: ADDAConfig) -> list[tuple[str, dict]]:
        """Stage 1 with the settings it depends on (its run key: shared by every stage 2 with those settings)."""
        return [("adda_pretrain", {k: getattr(config, k) for k in ("pretrain_steps", "batch_size", "pretrain_lr",
                                                                   "encoder", "n_classes", "eval_every")})]

    @classmethod
    def blank(cls, config: ADDAConfig, data: Domain, seed: int) -> dict[str, nn.Module]:
        return cls(config, SourcePretrain(config, data, None, [seed]), [seed]).modules(0)

    @classmethod
    def cost_steps(cls, config: ADDAConfig, data: dict) -> float:
        """About 17.5 steps a second at batch 128 (see the base class)."""
        return config.steps * (config.batch_size / 128) * 57 / 17.5

    def __init__(self, config: ADDAConfig, pretrained, seeds=None, name: str | None = None):
        if isinstance(pretrained, SourcePretrain):
            by_seed = {s: (pretrained.encoders[i], pretrained.classifiers[i]) for i, s in enumerate(pretrained.seeds)}
        elif all(isinstance(r, RunResult) and {"encoder", "classifier"} <= set(r.modules) for r in pretrained):
            by_seed = {r.seed: (r.modules["encoder"], r.modules["classifier"]) for r in pretrained}
        else:
            raise ValueError("pretrained must be a SourcePretrain or RunResults of method 'adda_pretrain' "
                             "(with 'encoder' and 'classifier' modules)")
        seeds = list(by_seed) if seeds is None else check_seeds(seeds)
        if missing := [s for s in seeds if s not in by_seed]:
            raise ValueError(f"pretrained lacks seeds {missing}; it holds {list(by_seed)}")
        default = f"adda_{config.mapping_loss}" if config.stage2 == "adda" else "dann_lenet"
        super().__init__(config, None, None, seeds, name=name or default)
        self.source_encoders, self.classifiers, self.target_encoders = [], [], []
        self.discriminators, self.opt_d, self.opt_t = [], [], []
        betas, tied = (self.config.beta1, self.config.beta2), self.config.stage2 == "dann"
        for s in self.seeds:
            enc, clf = by_seed[s]
            # ADDA: M_s and C frozen (eval mode), M_t an untied copy; DANN: one encoder, C learning
            m_s, c = (copy.deepcopy(m).requires_grad_(tied).train(tied) for m in (enc, clf))
            m_t = m_s if tied else copy.deepcopy(enc).requires_grad_(True)
            with seeded(s + 1_000_003):
                d = networks.adda_discriminator(500, 500).to(next(m_t.parameters()).device)
            for group, m in zip((self.source_encoders, self.classifiers, self.target_encoders, self.discriminators),
                                (m_s, c, m_t, d)):
                group.append(m)
            self.opt_d.append(torch.optim.Adam(d.parameters(), lr=self.config.lr, betas=betas))
            trained = list(m_t.parameters()) + (list(c.parameters()) if tied else [])
            self.opt_t.append(torch.optim.Adam(trained, lr=self.config.lr, betas=betas))

    def schedule(self, p: float) -> dict:
        return {"lr": self.config.lr, **({"grl_lambda": grl_lambda(p, self.config.gamma)}
                                         if self.config.stage2 == "dann" else {})}

    def step_one(self, i, x_s, ys, x_t, p: float) -> dict:
        m_s, c, m_t, d = self.source_encoders[i], self.classifiers[i], self.target_encoders[i], self.discriminators[i]
        opt_d, opt_t = self.opt_d[i], self.opt_t[i]
        if self.config.stage2 == "dann":  # eq. 1/5 on the tied encoder, D behind the reversal layer
            ns = x_s.shape[0]
            f = m_t(torch.cat([x_s, x_t]))
            label_loss = F.cross_entropy(c(f[:ns]), ys)
            z = d(grad_reverse(f, grl_lambda(p, self.config.gamma))).squeeze(-1)
            d_loss, d_acc = discriminator_loss(z[:ns], z[ns:])
            descend([opt_d, opt_t], label_loss + d_loss)
            f_t, out = f[ns:], {"label_loss": label_loss.detach()}
        else:  # D on M_s(x_s) -> 1, M_t(x_t) -> 0, then M_t on the mapping loss (D's gradients discarded)
            with torch.no_grad():
                f_s = m_s(x_s)
            f_t = m_t(x_t)
            d_loss, d_acc = discriminator_loss(d(f_s).squeeze(-1), d(f_t.detach()).squeeze(-1))
            descend([opt_d], d_loss)
            m_loss = adda_mapping_loss(d(f_t).squeeze(-1), self.config.mapping_loss)
            descend([opt_t], m_loss)
            out = {"mapping_loss": m_loss.detach()}
        with torch.no_grad():
            ent = prediction_entropy(c(f_t), self.config.n_classes)
        return {"d_loss": d_loss.detach(), "d_acc": d_acc.detach(), **out, "target_pred_entropy": ent}

    def networks(self) -> list[nn.Module]:  # the frozen source encoders too (not among the modules saved)
        return [*{id(m): m for m in self.source_encoders}.values(), *super().networks()]

    def train(self, mode: bool = True):
        tied = self.config.stage2 == "dann"  # ADDA's M_s and C stay in eval mode
        for m in self.target_encoders + self.discriminators + (self.classifiers if tied else []):
            m.train(mode)

    def predict_one(self, i, x):
        return self.classifiers[i](self.target_encoders[i](x))

    def modules(self, i: int) -> dict[str, nn.Module]:
        return {"encoder": self.target_encoders[i], "classifier": self.classifiers[i],
                "discriminator": self.discriminators[i]}

    @classmethod
    def run(cls, config: ADDAConfig, source: Domain, target: Domain, seeds, *, eval_sets=None, progress=True,
            name=None, monitor_size: int = 2000, pretrained=None) -> list[RunResult]:
        """Both stages for each seed (stage 2 only from ``pretrained``, the results of ``adda_pretrain``);
        stage 1's result goes in ``parts["pretrain"]``, stage 2 is checked by :func:`detect_collapse`."""
        check_source_labels(source, config.validate().n_classes)  # train() has checked the seeds
        if pretrained is None:
            pretrained = SourcePretrain.run(config, source, None, seeds, eval_sets=eval_sets, progress=progress,
                                            monitor_size=monitor_size)
        by_seed = {r.seed: r for r in pretrained}
        results = []
        for s in seeds:
            method = cls(config, pretrained, [s], name=name)  # ValueError if pretrained lacks seed s
            (r,) = fit(method, source, target, steps=config.steps, batch_size=config.batch_size,
                       eval_sets=eval_sets, eval_every=config.eval_every, progress=progress,
                       monitor_size=monitor_size, desc=f"{method.name} seed {s}")
            r.parts["pretrain"] = by_seed[s]
            if r.final["status"] == "ok":
                msg = detect_collapse(r.history, config)
                if msg:
                    r.final.update(status="collapsed", message=msg)
                    print(f"{method.name} seed {s} COLLAPSED: {msg}; recorded as 'collapsed', left out of the means")
            results.append(r)
        return results


def detect_collapse(history: list[dict], config: ADDAConfig) -> str:
    """A message if ``history``'s final ``collapse_window`` shows a collapse (module doc), else ``""``;
    reads only ``d_acc`` and ``target_pred_entropy`` (no target labels)."""
    tail = history[-max(1, math.ceil(config.collapse_window * len(history))):]
    if not tail:
        return ""
    d_acc, ent = [r["d_acc"] for r in tail], [r["target_pred_entropy"] for r in tail]
    window = f"steps {tail[0]['step']}-{tail[-1]['step']}"
    if min(d_acc) >= config.collapse_d_acc:
        return f"discriminator accuracy >= {config.collapse_d_acc} throughout {window}: M_t does not fool D"
    if max(d_acc) <= 1 - config.collapse_d_acc:
        return f"discriminator accuracy <= {1 - config.collapse_d_acc:.2f} throughout {window}"
    mean_ent = sum(ent) / len(ent)
    if mean_ent < config.collapse_entropy:
        return (f"target predictions collapsed onto few classes: normalised entropy of the predicted-class "
                f"histogram {mean_ent:.3f} < {config.collapse_entropy} over {window}")
    return ""
