"""ADDA: Adversarial Discriminative Domain Adaptation (Tzeng et al., CVPR 2017), and a DANN
stage 2 on the same network and recipe, for a fair comparison.

Two stages, each a :class:`~dannlib.training.Method` driven by the one loop
:func:`dannlib.training.fit`:

1. :class:`SourcePretrain` — source encoder ``M_s`` (LeNet) and classifier ``C`` trained
   with cross-entropy on the labelled source (Adam, lr 1e-3). Its target accuracy is the
   source-only baseline of the same network.
2. :class:`ADDA` — the target encoder ``M_t`` starts as an *untied copy* of ``M_s``;
   ``M_s`` and ``C`` are frozen. Each step first trains the discriminator ``D`` (500 -> 500
   -> 500 -> 1 logit, ReLU; the logit is ``log P(source)``) to tell ``M_s(x_s)`` (label 1)
   from ``M_t(x_t)`` (label 0) (Tzeng et al. 2017, eq. 7):

       L_advD = -E_s log D(M_s x_s) - E_t log(1 - D(M_t x_t))

   then updates ``M_t`` on the mapping loss of :func:`adda_mapping_loss` (Adam lr 2e-4,
   beta1 0.5 for both). Test: ``C(M_t(x))``.

   With ``stage2="dann"`` the same stage 2 budget trains DANN instead (Ganin & Lempitsky
   2015, eq. 1/5): encoder and classifier start from the same pre-training and stay *tied*
   (one encoder for both domains), the classifier keeps learning on the source labels, and
   the same discriminator architecture sits behind the gradient reversal layer with lambda
   from eq. 6 over stage 2's progress. Same optimiser, batches, steps and seeds as ADDA.

Collapse is detected without target labels, from the logs over the final
``collapse_window`` of training: the discriminator accuracy stuck at 1.0 (``M_t`` cannot
fool it) or at 0.0, or the histogram of the classes ``C(M_t)`` predicts on the target
training batch collapsing (normalised entropy below ``collapse_entropy``: nearly every
target image put in one or two classes; this assumes balanced target classes, true of the
digit sets). Such a seed gets status ``"collapsed"`` and is left out of the means.
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
from ..utils import check_choice, check_positive_int, check_positive_number, check_seeds, seeded

MAPPING_LOSSES = ("gan", "minimax", "confusion")
STAGE2 = ("adda", "dann")
ENCODERS = ("lenet",)


@dataclass
class ADDAConfig:
    """ADDA's hyper-parameters (the authors' recipe as defaults).

    ``steps`` counts the adaptation steps (stage 2), ``pretrain_steps`` the source
    pre-training steps (stage 1); ``batch_size`` is per domain."""

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
    # LeNet's convolution weights in channels_last memory format; None: on the CPU (1.6x faster
    # steps there, same arithmetic up to summation order: benchmarks/README.md)
    channels_last: bool | None = None

    def validate(self) -> "ADDAConfig":
        check_positive_int("pretrain_steps", self.pretrain_steps)
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("n_classes", self.n_classes)
        check_choice("stage2", self.stage2, STAGE2)
        check_choice("mapping_loss", self.mapping_loss, MAPPING_LOSSES)
        check_choice("encoder", self.encoder, ENCODERS)
        for name in ("pretrain_lr", "lr", "gamma"):
            check_positive_number(name, getattr(self, name))
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
                raise ValueError(f"{name} must lie in [0, 1), got {v!r}")
        if not (0.0 < self.collapse_window <= 1.0):
            raise ValueError(f"collapse_window must lie in (0, 1], got {self.collapse_window}")
        if not (0.5 < self.collapse_d_acc <= 1.0):
            raise ValueError(f"collapse_d_acc must lie in (0.5, 1], got {self.collapse_d_acc}")
        if not (0.0 <= self.collapse_entropy < 1.0):
            raise ValueError(f"collapse_entropy must lie in [0, 1), got {self.collapse_entropy}")
        if self.eval_every is not None:
            check_positive_int("eval_every", self.eval_every)
        return self

    def pretrain_settings(self) -> dict:
        """The settings stage 1 depends on (its run key: shared by every stage 2)."""
        return {"pretrain_steps": self.pretrain_steps, "batch_size": self.batch_size,
                "pretrain_lr": self.pretrain_lr, "encoder": self.encoder, "n_classes": self.n_classes,
                "eval_every": self.eval_every}


def adda_mapping_loss(d_logits_target: torch.Tensor, kind: str = "gan") -> torch.Tensor:
    """The target encoder's loss from the discriminator's logits ``z`` on ``M_t(x_t)``
    (shape ``(B,)``; ``D = sigmoid(z)`` = P(source)). Batch means (Tzeng et al. 2017, sec. 3.2):

    - ``"minimax"``: ``-L_advD``; only its target term depends on ``M_t``:
      ``E_t log(1 - D)``. Saturates when D is confident: weak early gradients.
    - ``"gan"`` (inverted labels): ``-E_t log D``.
    - ``"confusion"``: cross-entropy against the uniform domain label,
      ``-E_t [0.5 log D + 0.5 log(1 - D)]``.

    Computed from logits with ``log D = -softplus(-z)``, ``log(1 - D) = -softplus(z)``."""
    check_choice("kind", kind, MAPPING_LOSSES)
    log_d = -F.softplus(-d_logits_target)
    log_1md = -F.softplus(d_logits_target)
    if kind == "minimax":
        return log_1md.mean()
    if kind == "gan":
        return -log_d.mean()
    return -(0.5 * log_d + 0.5 * log_1md).mean()


def discriminator_loss(d_logits_source: torch.Tensor, d_logits_target: torch.Tensor):
    """``L_advD`` (batch means) and the discriminator's accuracy on both batches
    (source label 1, target label 0)."""
    ls = F.binary_cross_entropy_with_logits(d_logits_source, torch.ones_like(d_logits_source))
    lt = F.binary_cross_entropy_with_logits(d_logits_target, torch.zeros_like(d_logits_target))
    acc = torch.cat([(d_logits_source > 0), (d_logits_target <= 0)]).float().mean()
    return ls + lt, acc


def prediction_entropy(logits: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Entropy of the histogram of predicted classes (argmax of ``logits (B, C)``) divided
    by ``log(n_classes)``: 1 for a uniform spread, 0 when every input gets the same class."""
    counts = torch.bincount(logits.argmax(-1), minlength=n_classes).double()
    q = counts / counts.sum()
    h = -(q * torch.log(q.clamp_min(1e-12))).sum()
    return (h / math.log(n_classes)).float()


def _build_encoder(source: Domain) -> nn.Module:
    if source.x.ndim != 4:
        raise ValueError(f"ADDA's LeNet encoder takes images (N, C, H, W); source {source.name!r} has shape "
                         f"{tuple(source.x.shape)}")
    _, c, h, w = source.x.shape
    if h != w:
        raise ValueError(f"images must be square, got {h}x{w}")
    return networks.LeNetEncoder(in_channels=c, size=h)


def check_source_labels(source: Domain, n_classes: int) -> None:
    """ValueError naming the offending label unless every source label is in ``0..n_classes-1``
    (the classifier ``C`` has ``n_classes`` outputs; cross-entropy would fail with an IndexError)."""
    if source is None or source.y is None or not len(source.y):
        return
    lo, hi = int(source.y.min()), int(source.y.max())
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(f"source {source.name!r} has label {bad}, outside 0..{n_classes - 1}: ADDA's classifier "
                         f"has n_classes={n_classes} outputs; pass n_classes={max(hi + 1, n_classes)} (labels must "
                         "be 0..n_classes-1)")


class SourcePretrain(PerSeedMethod):
    """ADDA stage 1: ``M_s`` and ``C`` trained on the labelled source with cross-entropy
    (Adam, ``pretrain_lr``). One network pair per seed, built under ``seeded(seed)``.
    ``predict(x) = C(M_s(x))``; inputs ``(N, C, S, S)`` in [0, 1]."""

    Config = ADDAConfig
    uses_target = False

    def __init__(self, config: ADDAConfig, source: Domain, target: Domain | None, seeds, name: str | None = None):
        check_source_labels(source, config.n_classes)
        super().__init__(config, source, target, seeds, name=name or "adda_pretrain")
        device = source.x.device
        self.encoders, self.classifiers, self.optimizers = [], [], []
        for s in self.seeds:
            with seeded(s):
                enc = _build_encoder(source).to(device)
                clf = nn.Linear(500, self.config.n_classes).to(device)
            self.encoders.append(enc)
            self.classifiers.append(clf)
            self.optimizers.append(torch.optim.Adam(list(enc.parameters()) + list(clf.parameters()),
                                                    lr=self.config.pretrain_lr))

    @classmethod
    def total_steps(cls, config: ADDAConfig) -> int:
        return config.pretrain_steps

    @classmethod
    def cost_steps(cls, config: ADDAConfig, data: dict) -> float:
        """The pre-training's cost: about 45 steps a second at batch 128 (see the base class)."""
        return config.pretrain_steps * (config.batch_size / 128) * 57 / 45

    def schedule(self, p: float) -> dict:
        return {"lr": self.config.pretrain_lr}

    def step_one(self, i, xs, ys, xt, p: float) -> dict:
        opt = self.optimizers[i]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.classifiers[i](self.encoders[i](xs)), ys)
        loss.backward()
        opt.step()
        return {"label_loss": loss.detach()}

    def predict_one(self, i, x):
        return self.classifiers[i](self.encoders[i](x))

    def modules(self, i: int) -> dict[str, nn.Module]:
        return {"encoder": self.encoders[i], "classifier": self.classifiers[i]}


class ADDA(PerSeedMethod):
    """ADDA stage 2 (or DANN's, ``stage2="dann"``) from pre-trained ``(encoder, classifier)``
    pairs, one per seed: ``pretrained`` is a :class:`SourcePretrain` or a list of
    :class:`RunResult` of one (their ``modules``).

    Works on deep copies (the pre-training stays usable, e.g. for the three mapping losses
    from one pre-training). ADDA freezes ``M_s`` and ``C`` and trains an untied copy ``M_t``;
    the discriminator is built under ``seeded(seed + 1_000_003)``. ``predict(x) = C(M_t(x))``.

    ``step`` logs ``d_loss``, ``d_acc`` (the discriminator's accuracy on the two batches),
    ``mapping_loss`` (ADDA) or ``label_loss`` (DANN), and ``target_pred_entropy`` (see
    :func:`prediction_entropy`, on the target training batch: no labels)."""

    Config = ADDAConfig
    accepts_pretrained = True

    @classmethod
    def dependencies(cls, config: ADDAConfig) -> list[tuple[str, dict]]:
        """Stage 1, shared by the stage-2 variants with the same pre-training settings."""
        return [("adda_pretrain", config.pretrain_settings())]

    @classmethod
    def blank(cls, config: ADDAConfig, data: Domain, seed: int) -> dict[str, nn.Module]:
        return cls(config, SourcePretrain(config, data, None, [seed]), [seed]).modules(0)

    @classmethod
    def cost_steps(cls, config: ADDAConfig, data: dict) -> float:
        """Stage 2's cost: about 17.5 steps a second at batch 128 (see the base class)."""
        return config.steps * (config.batch_size / 128) * 57 / 17.5

    def __init__(self, config: ADDAConfig, pretrained, seeds=None, name: str | None = None):
        pairs = _pretrained_pairs(pretrained)
        seeds = [s for s, _, _ in pairs] if seeds is None else check_seeds(seeds)
        missing = [s for s in seeds if s not in {p[0] for p in pairs}]
        if missing:
            raise ValueError(f"pretrained lacks seeds {missing}; it holds {[p[0] for p in pairs]}")
        default = f"adda_{config.mapping_loss}" if config.stage2 == "adda" else "dann_lenet"
        super().__init__(config, None, None, seeds, name=name or default)
        by_seed = {s: (enc, clf) for s, enc, clf in pairs}
        self.source_encoders, self.classifiers, self.target_encoders = [], [], []
        self.discriminators, self.opt_d, self.opt_t = [], [], []
        betas = (self.config.beta1, self.config.beta2)
        tied = self.config.stage2 == "dann"
        for s in self.seeds:
            enc, clf = by_seed[s]
            m_s, c = copy.deepcopy(enc), copy.deepcopy(clf)
            if tied:
                m_t = m_s  # one encoder for both domains; classifier keeps learning
                for module in (m_s, c):
                    module.requires_grad_(True)
            else:
                for module in (m_s, c):
                    module.eval()
                    module.requires_grad_(False)
                m_t = copy.deepcopy(enc)
                m_t.requires_grad_(True)
            device = next(m_t.parameters()).device
            with seeded(s + 1_000_003):
                d = networks.adda_discriminator(500, 500).to(device)
            self.source_encoders.append(m_s)
            self.classifiers.append(c)
            self.target_encoders.append(m_t)
            self.discriminators.append(d)
            self.opt_d.append(torch.optim.Adam(d.parameters(), lr=self.config.lr, betas=betas))
            trained = list(m_t.parameters()) + (list(c.parameters()) if tied else [])
            self.opt_t.append(torch.optim.Adam(trained, lr=self.config.lr, betas=betas))

    def schedule(self, p: float) -> dict:
        out = {"lr": self.config.lr}
        if self.config.stage2 == "dann":
            out["grl_lambda"] = grl_lambda(p, self.config.gamma)
        return out

    def step_one(self, i, x_s, ys, x_t, p: float) -> dict:
        if self.config.stage2 == "dann":
            return self._dann_step(i, x_s, ys, x_t, p)
        m_s, c, m_t, d = self.source_encoders[i], self.classifiers[i], self.target_encoders[i], self.discriminators[i]
        # -- discriminator step: M_s(x_s) -> 1, M_t(x_t) -> 0
        with torch.no_grad():
            f_s = m_s(x_s)
        f_t = m_t(x_t)
        self.opt_d[i].zero_grad(set_to_none=True)
        d_loss, d_acc = discriminator_loss(d(f_s).squeeze(-1), d(f_t.detach()).squeeze(-1))
        d_loss.backward()
        self.opt_d[i].step()
        # -- target encoder step on the mapping loss (D's gradients are discarded)
        self.opt_t[i].zero_grad(set_to_none=True)
        m_loss = adda_mapping_loss(d(f_t).squeeze(-1), self.config.mapping_loss)
        m_loss.backward()
        self.opt_t[i].step()
        with torch.no_grad():
            ent = prediction_entropy(c(f_t), self.config.n_classes)
        return {"d_loss": d_loss.detach(), "d_acc": d_acc.detach(), "mapping_loss": m_loss.detach(),
                "target_pred_entropy": ent}

    def _dann_step(self, i, x_s, ys, x_t, p: float) -> dict:
        """One DANN step (eq. 1/5) on the tied LeNet encoder: source cross-entropy plus the
        discriminator's domain loss through the gradient reversal layer (source label 1,
        target 0, as for ADDA's D)."""
        enc, c, d = self.target_encoders[i], self.classifiers[i], self.discriminators[i]
        f = enc(torch.cat([x_s, x_t]))
        ns = x_s.shape[0]
        label_loss = F.cross_entropy(c(f[:ns]), ys)
        z = d(grad_reverse(f, grl_lambda(p, self.config.gamma))).squeeze(-1)
        d_loss, d_acc = discriminator_loss(z[:ns], z[ns:])
        self.opt_d[i].zero_grad(set_to_none=True)
        self.opt_t[i].zero_grad(set_to_none=True)
        (label_loss + d_loss).backward()
        self.opt_d[i].step()
        self.opt_t[i].step()
        with torch.no_grad():
            ent = prediction_entropy(c(f[ns:]), self.config.n_classes)
        return {"d_loss": d_loss.detach(), "d_acc": d_acc.detach(), "label_loss": label_loss.detach(),
                "target_pred_entropy": ent}

    def networks(self) -> list[nn.Module]:
        # the frozen source encoders too (not among the modules saved)
        return [*{id(m): m for m in self.source_encoders}.values(), *super().networks()]

    def train(self, mode: bool = True):
        # ADDA: M_s and C stay in eval mode (frozen); only M_t and D switch.
        for m in self.target_encoders + self.discriminators:
            m.train(mode)
        if self.config.stage2 == "dann":
            for m in self.classifiers:
                m.train(mode)
        return self

    def predict_one(self, i, x):
        return self.classifiers[i](self.target_encoders[i](x))

    def modules(self, i: int) -> dict[str, nn.Module]:
        return {"encoder": self.target_encoders[i], "classifier": self.classifiers[i],
                "discriminator": self.discriminators[i]}

    @classmethod
    def run(cls, config: ADDAConfig, source: Domain, target: Domain, seeds, *, eval_sets=None, progress=True,
            name=None, monitor_size: int = 2000, pretrained=None) -> list[RunResult]:
        """Both stages for each seed (or stage 2 only from ``pretrained``: per-seed
        :class:`RunResult` of :func:`pretrain_source`, to share one pre-training between
        stage-2 variants). Each result carries its stage-1 result in ``parts["pretrain"]``.
        After stage 2 each seed's history is checked by :func:`detect_collapse`."""
        config = config.validate()
        seeds = check_seeds(seeds)
        check_source_labels(source, config.n_classes)
        if pretrained is None:
            pretrained = pretrain_source(source, config, seeds, eval_sets=eval_sets, progress=progress,
                                         monitor_size=monitor_size)
        by_seed = {r.seed: r for r in pretrained}
        results = []
        for s in seeds:
            if s not in by_seed:
                raise ValueError(f"pretrained lacks seed {s}; it holds {sorted(by_seed)}")
            method = cls(config, [by_seed[s]], [s], name=name)
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


def _pretrained_pairs(pretrained) -> list[tuple[int, nn.Module, nn.Module]]:
    if isinstance(pretrained, SourcePretrain):
        return [(s, pretrained.encoders[i], pretrained.classifiers[i]) for i, s in enumerate(pretrained.seeds)]
    pairs = []
    for r in pretrained:
        if not isinstance(r, RunResult) or not {"encoder", "classifier"} <= set(r.modules):
            raise ValueError("pretrained must be a SourcePretrain or RunResults of pretrain_source "
                             "(with 'encoder' and 'classifier' modules)")
        pairs.append((r.seed, r.modules["encoder"], r.modules["classifier"]))
    return pairs


def detect_collapse(history: list[dict], config: ADDAConfig) -> str:
    """A message if one seed's adaptation ``history`` shows a collapse in its final
    ``collapse_window`` (see module doc), else ``""``. Uses no target labels: only
    ``d_acc`` and ``target_pred_entropy``."""
    if not history:
        return ""
    n = max(1, int(math.ceil(config.collapse_window * len(history))))
    tail = history[-n:]
    d_acc = [r["d_acc"] for r in tail]
    ent = [r["target_pred_entropy"] for r in tail]
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


def pretrain_source(source: Domain, config: ADDAConfig, seeds=(0,), *, eval_sets: dict[str, Domain] | None = None,
                    progress: bool = True, monitor_size: int = 2000) -> list[RunResult]:
    """ADDA stage 1 for each seed: one :class:`RunResult` per seed (method name
    ``adda_pretrain``; its target accuracy is the source-only baseline of the LeNet)."""
    return SourcePretrain.run(config.validate(), source, None, seeds, eval_sets=eval_sets, progress=progress,
                              monitor_size=monitor_size)
