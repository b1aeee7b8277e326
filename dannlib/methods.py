"""Source-only and DANN (Ganin & Lempitsky 2015; Ganin et al. 2016) as :class:`Method` s.

Four modes of one network (seed 003's toy study, REFERENCE §2):

- ``source_only``: label loss on the source only (also "train on target", an oracle, when
  the labelled target training set is passed as the source);
- ``domain_only``: the domain loss only, reversal switched off (``grl_lambda = -1``: the
  feature extractor *helps* the domain classifier);
- ``dann``: eq. 1/5, ``E = L_y(source) + L_d(source, target)`` with the gradient reversal
  layer between features and domain classifier, lambda from eq. 6;
- ``dann_deep``: DANN with a deeper domain classifier (toy network only).

Optimiser: SGD with momentum 0.9 and the annealed learning rate of eq. 7 (the paper), or
Adam with a constant rate (a stated deviation). Several seeds train together through
``torch.func``: parameters of K independently initialised networks are stacked, the loss
gradient is ``vmap(grad(loss))``, and the stacked tensors are updated by the same
``torch.optim`` optimiser (SGD and Adam are elementwise, so stacking changes nothing).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import networks
from .schedules import annealed_lr, grl_lambda
from .training import Domain, Method, RunResult, fit
from .utils import check_choice, check_positive_int, seeded

MODES = ("source_only", "domain_only", "dann")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("annealed", "constant")
LAMBDA_SCHEDULES = ("dann", "constant")


@dataclass
class DANNConfig:
    """Hyper-parameters of source-only / DANN training, each declared once with its
    default (the paper's digits recipe where it has one).

    ``batch_size`` is per domain: 32 source + 32 target images per step as in the public
    TensorFlow reproduction. ``network`` picks a builder from :data:`NETWORKS`."""

    mode: str = "dann"
    network: str = "digits"
    steps: int = 10_000
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.01               # mu_0 of eq. 7 (or Adam's constant rate)
    lr_schedule: str = "annealed"  # eq. 7
    lr_alpha: float = 10.0
    lr_beta: float = 0.75
    momentum: float = 0.9
    weight_decay: float = 0.0
    lambda_schedule: str = "dann"  # eq. 6
    gamma: float = 10.0
    lambda_max: float = 1.0
    eval_every: int | None = None
    # torch.compile the network's three parts (the GRL stays eager between them); single-seed
    # runs only (the vmap path does not compile). Off by default: on the CPU it measured slower
    # and costs over a minute of compilation (benchmarks/README.md). Unmeasured on GPU.
    compile: bool = False
    # Convolution weights in channels_last memory format, single-seed runs only; None: on the
    # CPU (measured ~1.2x faster steps there with mkldnn; unmeasured on GPU). Same numbers to
    # float tolerance, deterministic under a seed either way.
    channels_last: bool | None = None

    def validate(self) -> "DANNConfig":
        check_choice("mode", self.mode, MODES)
        check_choice("network", self.network, NETWORKS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("lambda_schedule", self.lambda_schedule, LAMBDA_SCHEDULES)
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not (0.0 <= self.lambda_max < float("inf")):
            raise ValueError(f"lambda_max must be a finite number >= 0, got {self.lambda_max}")
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        return self


def _toy(source: Domain, target: Domain, deep: bool, hidden: int = 8) -> nn.Module:
    n_classes = int(source.y.max()) + 1
    return networks.toy_net(source.x.shape[1], hidden=hidden, n_classes=max(2, n_classes),
                            deep_domain_classifier=deep)


def _digits(source: Domain, target: Domain) -> nn.Module:
    _, c, h, w = source.x.shape
    if target.x.shape[1:] != source.x.shape[1:]:
        raise ValueError(f"source images {tuple(source.x.shape[1:])} and target images "
                         f"{tuple(target.x.shape[1:])} differ: put both domains on one size and channel count")
    # Per-pixel mean of the source and target training images (no labels involved).
    mean = torch.cat([source.x, target.x]).mean(0)
    return networks.digits_net(in_channels=c, size=h, input_mean=mean)


NETWORKS: dict[str, Callable[[Domain, Domain], nn.Module]] = {
    "toy": lambda s, t: _toy(s, t, deep=False),
    "toy_deep": lambda s, t: _toy(s, t, deep=True),
    # The JMLR paper's moons network (Ganin et al. 2016, sec. 5.1.1): 15 hidden units.
    "toy_wide": lambda s, t: _toy(s, t, deep=False, hidden=15),
    "toy_wide_deep": lambda s, t: _toy(s, t, deep=True, hidden=15),
    "digits": _digits,
}


def dann_objective(net: Callable, xs, ys, xt, lambda_: float, mode: str):
    """The loss of one step, eq. 1/5, with batch means instead of sums.

    ``net(x)`` returns class logits; ``net(x, lambda_)`` returns ``(class_logits,
    domain_logits)`` with the reversal inside. Domain labels: source 0, target 1; binary
    cross-entropy on one logit. Returns ``(total, parts)``; ``parts`` holds
    ``label_loss``, ``domain_loss``, ``domain_acc`` (the domain classifier's batch accuracy).
    """
    if mode == "source_only":
        label_loss = F.cross_entropy(net(xs), ys)
        return label_loss, {"label_loss": label_loss}
    ns = xs.shape[0]
    class_logits, domain_logits = net(torch.cat([xs, xt]), lambda_)
    # domain labels in the logits' dtype (float32 labels would round a float64 loss)
    d = torch.cat([torch.zeros(ns, device=xs.device, dtype=domain_logits.dtype),
                   torch.ones(xt.shape[0], device=xs.device, dtype=domain_logits.dtype)])
    domain_loss = F.binary_cross_entropy_with_logits(domain_logits, d)
    label_loss = F.cross_entropy(class_logits[:ns], ys)
    domain_acc = ((domain_logits > 0).float() == d).float().mean()
    total = domain_loss if mode == "domain_only" else label_loss + domain_loss
    return total, {"label_loss": label_loss.detach(), "domain_loss": domain_loss.detach(),
                   "domain_acc": domain_acc.detach()}


class DANN(Method):
    """Source-only / domain-only / DANN training of one network per seed (see module doc)."""

    def __init__(self, config: DANNConfig, source: Domain, target: Domain, seeds: list[int], name: str | None = None):
        self.config = config.validate()
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        self.name = name or config.mode
        self.uses_target = config.mode != "source_only"
        build = NETWORKS[config.network]
        nets = []
        for s in self.seeds:
            with seeded(s):
                nets.append(build(source, target).to(source.x.device))
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
        channels_last = config.channels_last
        if channels_last is None:
            channels_last = source.x.device.type == "cpu"
        if channels_last and not self.batched:
            nets[0].to(memory_format=torch.channels_last)  # 4-D (conv) weights only
        if config.compile:
            if self.batched:
                raise ValueError("compile=True needs single-seed runs (the vmap path does not compile): "
                                 "pass together=False or compile=False")
            for part in ("feature_extractor", "label_predictor", "domain_classifier"):
                getattr(nets[0], part).compile()  # in place: same parameters, compiled calls
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum,
                                             weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)

    # -- schedules ---------------------------------------------------------------------
    def grl_lambda(self, p: float) -> float:
        if self.config.mode == "domain_only":
            return -1.0  # reversal switched off (seed 003's grad_scale = -1)
        if self.config.lambda_schedule == "constant":
            return self.config.lambda_max
        return self.config.lambda_max * grl_lambda(p, self.config.gamma)

    def lr(self, p: float) -> float:
        c = self.config
        return annealed_lr(p, c.lr, c.lr_alpha, c.lr_beta) if c.lr_schedule == "annealed" else c.lr

    def schedule(self, p: float) -> dict:
        return {"grl_lambda": self.grl_lambda(p), "lr": self.lr(p)}

    # -- the step ----------------------------------------------------------------------
    def _functional_loss(self, params, buffers, xs, ys, xt, lambda_):
        net = lambda x, lam=None: torch.func.functional_call(self._base, (params, buffers), (x, lam))
        return dann_objective(net, xs, ys, xt, lambda_, self.config.mode)

    def step(self, xs, ys, xt, p: float) -> dict:
        lam, lr = self.grl_lambda(p), self.lr(p)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
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
    def train(self, mode: bool = True):
        for n in self.nets:
            n.train(mode)
        return self

    def _sync_nets(self) -> None:
        """Copy the stacked parameters back into the per-seed modules (batched runs)."""
        if self.batched:
            with torch.no_grad():
                for i, net in enumerate(self.nets):
                    for name, prm in net.named_parameters():
                        prm.copy_(self.params[name][i])

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if not self.batched:
            return self.nets[0](x)
        f = torch.func.vmap(lambda p, b: torch.func.functional_call(self._base, (p, b), (x,)))
        return f(self.params, self.buffers)

    def networks(self) -> list[nn.Module]:
        """One trained ``DANNNet`` per seed (in ``seeds`` order)."""
        self._sync_nets()
        return self.nets

    @torch.no_grad()
    def features(self, x: torch.Tensor, seed_index: int = 0, batch_size: int = 4096) -> torch.Tensor:
        """The feature extractor's output G_f(x) for one seed's network, ``(N, D)``."""
        net = self.networks()[seed_index]
        net.eval()
        return torch.cat([net.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


# -- the method registry: a plain dict, name -> (config class, fixed settings) -----------
METHODS: dict[str, tuple[type, dict]] = {
    "source_only": (DANNConfig, {"mode": "source_only"}),
    "train_on_target": (DANNConfig, {"mode": "source_only"}),  # oracle: pass target labels as source
    "domain_only": (DANNConfig, {"mode": "domain_only"}),
    "dann": (DANNConfig, {"mode": "dann"}),
    "dann_deep": (DANNConfig, {"mode": "dann", "network": "toy_deep"}),
    # A stated deviation from the paper (notebook 03's "improved recipe"): Adam at a constant
    # 1e-3 instead of SGD + eq. 7; lambda still follows eq. 6; same network, no batch norm.
    "dann_improved": (DANNConfig, {"mode": "dann", "optimizer": "adam", "lr": 1e-3, "lr_schedule": "constant"}),
}

METHOD_CLASSES: dict[type, type] = {DANNConfig: DANN}


def make_config(method: str, **overrides):
    """The config of a registered method with ``overrides`` applied (unknown method or
    field -> ValueError listing the allowed ones)."""
    check_choice("method", method, METHODS)
    cls, fixed = METHODS[method]
    fields = cls.__dataclass_fields__
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; allowed: {', '.join(fields)}")
    return cls(**{**fixed, **overrides}).validate()


def train(method: str, source: Domain, target: Domain, *, seeds=(0,), config=None,
          eval_sets: dict[str, Domain] | None = None, progress: bool = True, together: bool | None = None,
          monitor_size: int = 2000, **overrides) -> list[RunResult]:
    """Train a registered ``method`` on ``source`` -> ``target`` for each seed.

    ``together=True`` trains all seeds as one batched model (``torch.func.vmap``; one
    RunResult holding every seed); ``False`` trains one seed after another (one RunResult
    each). The default, None, batches on CUDA (unless ``compile=True``, which is single-seed
    only) and not on the CPU, where the batched
    convolution backward of PyTorch's vmap is slower than separate runs (measured in
    ``python -m dannlib bench``). Returns the list of RunResults. ``config`` (a dataclass) or ``overrides``
    (field=value) set the hyper-parameters. ``monitor_size``: how many images of each
    evaluation set the monitoring curves use (passed to :func:`dannlib.training.fit`). The target's labels are never passed to the
    method: only ``eval_sets`` see them.
    """
    cfg = config if config is not None else make_config(method, **overrides)
    if config is not None and overrides:
        cfg = replace(config, **overrides).validate()
    cls = METHOD_CLASSES[type(cfg)]
    seeds = [int(s) for s in seeds]
    if hasattr(cls, "train_runs"):  # multi-stage methods (ADDA) run their own sequence of fit calls
        return cls.train_runs(cfg, source, target.unlabelled(), seeds, eval_sets=eval_sets, progress=progress,
                              together=together, name=method)
    if together is None:
        together = source.x.device.type == "cuda" and len(seeds) > 1 and not getattr(cfg, "compile", False)
    groups = [seeds] if together else [[s] for s in seeds]
    results = []
    for group in groups:
        m = cls(cfg, source, target.unlabelled(), group, name=method)
        results.append(fit(m, source, target.unlabelled(), steps=cfg.steps, batch_size=cfg.batch_size,
                           eval_sets=eval_sets, eval_every=cfg.eval_every, progress=progress,
                           monitor_size=monitor_size))
    return results


def config_dict(config) -> dict:
    return asdict(config)


# ADDA and IIMT live in their own modules and add themselves to METHODS / METHOD_CLASSES
# when imported; imported here, at the bottom, so that methods.train("adda", ...) works.
from . import adda as _adda, iimt as _iimt  # noqa: E402,F401
