"""ADDA: Adversarial Discriminative Domain Adaptation (Tzeng et al., CVPR 2017; REFERENCE §4).

Two stages, each a :class:`~dannlib.training.Method` driven by the one loop
:func:`dannlib.training.fit`:

1. :class:`SourcePretrain` — source encoder ``M_s`` and classifier ``C`` trained with
   cross-entropy on the labelled source (Adam, lr 1e-3). Its target accuracy is the
   source-only baseline of the same network.
2. :class:`ADDA` — the target encoder ``M_t`` starts as an *untied copy* of ``M_s``;
   ``M_s`` and ``C`` are frozen (``requires_grad=False``, eval mode). Each step first trains
   the discriminator ``D`` (500 -> 500 -> 500 -> 1 logit, ReLU; the logit is
   ``log P(source)``) to tell ``M_s(x_s)`` (label 1) from ``M_t(x_t)`` (label 0):

       L_advD = -E_s log D(M_s x_s) - E_t log(1 - D(M_t x_t))

   then updates ``M_t`` on the mapping loss of :func:`adda_mapping_loss` (Adam lr 2e-4,
   beta1 0.5 for both). Test: ``C(M_t(x))``.

Collapse (REFERENCE §6: "ADDA collapsing") is detected without target labels, from the
per-step logs over the final ``collapse_window`` of training: the discriminator accuracy
stuck at 1.0 (``M_t`` cannot fool it) or at 0.0, or the histogram of the classes ``C(M_t)``
predicts on the target training batch collapsing (normalised entropy below
``collapse_entropy``, i.e. nearly every target image put in one or two classes — this assumes
the target classes are not themselves that unbalanced, true of the digit sets). Such a seed
is recorded with status ``"collapsed"`` and left out of the means by
:func:`dannlib.records.summary_table`.

Several seeds: a method built for K seeds keeps K independent sets of networks and loops
over them inside ``step`` (batches ``(K, B, ...)``, losses ``(K,)``), so seed k of a K-seed
run is the single-seed run of seed k.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import networks
from .training import Domain, Method, RunResult, fit
from .utils import check_choice, check_positive_int, seeded

MAPPING_LOSSES = ("gan", "minimax", "confusion")
ENCODERS = ("lenet",)


@dataclass
class ADDAConfig:
    """ADDA's hyper-parameters (the authors' recipe as defaults, REFERENCE §4).

    ``steps`` counts the adaptation steps (stage 2), ``pretrain_steps`` the source
    pre-training steps (stage 1); ``batch_size`` is per domain."""

    pretrain_steps: int = 10_000
    steps: int = 10_000
    batch_size: int = 128
    pretrain_lr: float = 1e-3          # Adam, stage 1
    lr: float = 2e-4                   # Adam, stage 2 (M_t and D)
    beta1: float = 0.5
    beta2: float = 0.999
    mapping_loss: str = "gan"          # "gan" (inverted labels) | "minimax" | "confusion"
    encoder: str = "lenet"
    n_classes: int = 10
    collapse_window: float = 0.25      # final fraction of the logged records examined
    collapse_d_acc: float = 0.99       # D accuracy >= this (or <= 1 - this) throughout: collapsed
    collapse_entropy: float = 0.35     # normalised entropy of predicted-class histogram below: collapsed
    eval_every: int | None = None

    def validate(self) -> "ADDAConfig":
        check_positive_int("pretrain_steps", self.pretrain_steps)
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("n_classes", self.n_classes)
        check_choice("mapping_loss", self.mapping_loss, MAPPING_LOSSES)
        check_choice("encoder", self.encoder, ENCODERS)
        for name in ("pretrain_lr", "lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
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


def adda_mapping_loss(d_logits_target: torch.Tensor, kind: str = "gan") -> torch.Tensor:
    """The target encoder's loss from the discriminator's logits ``z`` on ``M_t(x_t)``
    (shape ``(B,)``; ``D = sigmoid(z)`` = P(source)). Batch means (Tzeng et al. 2017, sec. 3):

    - ``"minimax"``: ``-L_advD``; only its target term depends on ``M_t``:
      ``E_t log(1 - D)`` (the source term ``E_s log D(M_s x_s)`` is a constant for ``M_t``
      and is left out). Saturates when D is confident: weak early gradients.
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


def _build_encoder(config: ADDAConfig, source: Domain) -> nn.Module:
    _, c, h, w = source.x.shape
    if h != w:
        raise ValueError(f"images must be square, got {h}x{w}")
    return networks.LeNetEncoder(in_channels=c, size=h)


def _stack(values: list[torch.Tensor], batched: bool) -> torch.Tensor:
    return torch.stack(values) if batched else values[0]


class SourcePretrain(Method):
    """ADDA stage 1: ``M_s`` and ``C`` trained on the labelled source with cross-entropy
    (Adam, ``pretrain_lr``). One network pair per seed, built under ``seeded(seed)``.
    ``predict(x) = C(M_s(x))``; inputs ``(N, C, S, S)`` in [0, 1]."""

    uses_target = False

    def __init__(self, config: ADDAConfig, source: Domain, target: Domain | None, seeds: list[int],
                 name: str = "adda_pretrain"):
        self.config = config.validate()
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        self.name = name
        device = source.x.device
        self.encoders, self.classifiers, self.optimizers = [], [], []
        for s in self.seeds:
            with seeded(s):
                enc = _build_encoder(self.config, source).to(device)
                clf = nn.Linear(500, self.config.n_classes).to(device)
            self.encoders.append(enc)
            self.classifiers.append(clf)
            self.optimizers.append(torch.optim.Adam(list(enc.parameters()) + list(clf.parameters()),
                                                    lr=self.config.pretrain_lr))

    def schedule(self, p: float) -> dict:
        return {"lr": self.config.pretrain_lr}

    def step(self, xs, ys, xt, p: float) -> dict:
        losses = []
        for i in range(len(self.seeds)):
            x, y = (xs[i], ys[i]) if self.batched else (xs, ys)
            opt = self.optimizers[i]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.classifiers[i](self.encoders[i](x)), y)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return {"label_loss": _stack(losses, self.batched)}

    def train(self, mode: bool = True):
        for m in self.encoders + self.classifiers:
            m.train(mode)
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return _stack([c(e(x)) for e, c in zip(self.encoders, self.classifiers)], self.batched)


class ADDA(Method):
    """ADDA stage 2 (adversarial adaptation) from a trained :class:`SourcePretrain`.

    Takes deep copies of the pre-trained ``M_s`` and ``C`` (the pre-training result stays
    usable, e.g. for the three mapping losses from one pre-training), freezes them, and
    builds ``M_t`` as another deep copy of ``M_s`` (equal values, distinct tensors) and a
    fresh discriminator under ``seeded(seed + 1_000_003)``. ``predict(x) = C(M_t(x))``.

    ``step`` logs ``d_loss`` (L_advD), ``d_acc`` (its accuracy on the two batches),
    ``mapping_loss`` and ``target_pred_entropy`` (see :func:`prediction_entropy`, on the
    target training batch: no labels)."""

    def __init__(self, config: ADDAConfig, pretrained: SourcePretrain, name: str | None = None):
        self.config = config.validate()
        self.seeds = list(pretrained.seeds)
        self.name = name or f"adda_{self.config.mapping_loss}"
        self.source_encoders, self.classifiers, self.target_encoders = [], [], []
        self.discriminators, self.opt_d, self.opt_t = [], [], []
        betas = (self.config.beta1, self.config.beta2)
        for s, enc, clf in zip(self.seeds, pretrained.encoders, pretrained.classifiers):
            m_s, c = copy.deepcopy(enc), copy.deepcopy(clf)
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
            self.opt_t.append(torch.optim.Adam(m_t.parameters(), lr=self.config.lr, betas=betas))

    def schedule(self, p: float) -> dict:
        return {"lr": self.config.lr}

    def step(self, xs, ys, xt, p: float) -> dict:
        out = {"d_loss": [], "d_acc": [], "mapping_loss": [], "target_pred_entropy": []}
        for i in range(len(self.seeds)):
            x_s, x_t = (xs[i], xt[i]) if self.batched else (xs, xt)
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
            out["d_loss"].append(d_loss.detach())
            out["d_acc"].append(d_acc.detach())
            out["mapping_loss"].append(m_loss.detach())
            out["target_pred_entropy"].append(ent)
        return {k: _stack(v, self.batched) for k, v in out.items()}

    def train(self, mode: bool = True):
        # M_s and C stay in eval mode (frozen); only M_t and D switch.
        for m in self.target_encoders + self.discriminators:
            m.train(mode)
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return _stack([c(e(x)) for e, c in zip(self.target_encoders, self.classifiers)], self.batched)

    # -- registry hook: methods.train("adda", ...) runs both stages -----------------------
    @classmethod
    def train_runs(cls, config, source, target, seeds, *, eval_sets=None, progress=True,
                   together=None, name=None):
        return train_adda(source, target, config, seeds=seeds, eval_sets=eval_sets,
                          progress=progress, together=together, name=name)


@dataclass
class ADDARunResult(RunResult):
    """A :class:`RunResult` of stage 2 (its ``final`` is what is reported), with the stage-1
    result in ``pretrain`` (its ``final`` is the source-only accuracy of the same network)."""

    pretrain: RunResult | None = None


def detect_collapse(history: list[dict], seed: int, config: ADDAConfig) -> str:
    """A message if seed ``seed``'s adaptation history shows a collapse in its final
    ``collapse_window`` (see module doc), else ``""``. Uses no target labels: only
    ``d_acc`` and ``target_pred_entropy``."""
    recs = [r for r in history if r["seed"] == seed]
    if not recs:
        return ""
    n = max(1, int(math.ceil(config.collapse_window * len(recs))))
    tail = recs[-n:]
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


def pretrain_source(source: Domain, target: Domain | None, config: ADDAConfig, seeds=(0,), *,
                    eval_sets: dict[str, Domain] | None = None, progress: bool = True,
                    together: bool | None = None) -> list[RunResult]:
    """ADDA stage 1 for each seed (one RunResult per group of seeds trained together)."""
    config = config.validate()
    seeds = [int(s) for s in seeds]
    groups = _groups(seeds, source, together)
    return [fit(SourcePretrain(config, source, None, g), source, source if target is None else target.unlabelled(),
                steps=config.pretrain_steps, batch_size=config.batch_size, eval_sets=eval_sets,
                eval_every=config.eval_every, progress=progress, desc=f"ADDA pre-training seeds {g}")
            for g in groups]


def _groups(seeds, source, together):
    if together is None:
        together = source.x.device.type == "cuda" and len(seeds) > 1
    return [seeds] if together else [[s] for s in seeds]


def train_adda(source: Domain, target: Domain, config: ADDAConfig | None = None, seeds=(0,), *,
               eval_sets: dict[str, Domain] | None = None, progress: bool = True,
               together: bool | None = None, pretrained: list[RunResult] | None = None,
               name: str | None = None) -> list[ADDARunResult]:
    """ADDA on ``source`` -> ``target`` for each seed: stage 1 (or the given ``pretrained``
    results of :func:`pretrain_source`, to share one pre-training between mapping losses),
    then stage 2, both through :func:`dannlib.training.fit`. The target's labels are never
    given to the method (``eval_sets`` only). After stage 2 each seed's history is checked by
    :func:`detect_collapse`; a collapsed seed gets status ``"collapsed"`` and a message (a
    line is printed) and the other seeds carry on. Returns one :class:`ADDARunResult` per
    group of seeds (per seed on the CPU)."""
    config = (config or ADDAConfig()).validate()
    seeds = [int(s) for s in seeds]
    target = target.unlabelled()
    if pretrained is None:
        pretrained = pretrain_source(source, target, config, seeds, eval_sets=eval_sets, progress=progress,
                                     together=together)
    by_seed = {}
    for r in pretrained:
        for s in r.method.seeds:
            by_seed[s] = r
    missing = [s for s in seeds if s not in by_seed]
    if missing:
        raise ValueError(f"pretrained lacks seeds {missing}; it holds {sorted(by_seed)}")
    results = []
    for pre in {id(by_seed[s]): by_seed[s] for s in seeds}.values():
        method = ADDA(config, pre.method, name=name)
        r = fit(method, source, target, steps=config.steps, batch_size=config.batch_size, eval_sets=eval_sets,
                eval_every=config.eval_every, progress=progress,
                desc=f"ADDA ({config.mapping_loss}) seeds {method.seeds}")
        result = ADDARunResult(method=r.method, history=r.history, final=r.final, seconds=r.seconds,
                               steps=r.steps, pretrain=pre)
        for rec in result.final:
            if rec["status"] != "ok":
                continue
            msg = detect_collapse(result.history, rec["seed"], config)
            if msg:
                rec["status"] = "collapsed"
                rec["message"] = msg
                print(f"ADDA ({config.mapping_loss}) seed {rec['seed']} COLLAPSED: {msg}; "
                      "recorded as 'collapsed', left out of the means")
        results.append(result)
    return results


# -- registry: methods.train("adda", ...) / "adda_minimax" / "adda_confusion" -------------
from . import methods as _methods  # noqa: E402

_methods.METHODS.update({
    "adda": (ADDAConfig, {"mapping_loss": "gan"}),
    "adda_gan": (ADDAConfig, {"mapping_loss": "gan"}),
    "adda_minimax": (ADDAConfig, {"mapping_loss": "minimax"}),
    "adda_confusion": (ADDAConfig, {"mapping_loss": "confusion"}),
})
_methods.METHOD_CLASSES[ADDAConfig] = ADDA
