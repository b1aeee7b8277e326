"""The one training loop. Every method (source-only, DANN, ADDA, IIMT, ...) plugs in as a
:class:`Method` that owns its networks and optimisers and implements ``step``; the loop
(:func:`fit`) draws the batches, feeds the schedules' progress ``p``, logs, evaluates,
watches for divergence and shows a progress bar. Methods differ in their step, not in
copies of a loop.

A training run is one seed (:meth:`Method.run` builds a method per seed). A
:class:`PerSeedMethod` built for ``K`` seeds can also train them in one :func:`fit`: it
receives batches shaped ``(K, B, ...)`` (seed ``k``'s are exactly those a single-seed run
with that seed draws) and loops over the seeds. Either way :func:`fit` returns one
:class:`RunResult` per seed.

Data never leaves the training device: batches are gathered by index from tensors already
there, no per-sample ``DataLoader``.
"""
from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .domain import Batches, Domain, check_domains
from .utils import check_positive_int, check_seeds, progress_enabled


#: A logged loss (a key ending in "loss") above this counts as an explosion: the cross-entropies,
#: squared errors and adversarial losses of these methods stay below ~50 in any sane run (2.3
#: is chance on 10 classes); 1e4 means logits of that order. A seed seen once past it (or
#: non-finite) is recorded as diverged, even if it later settles at a dead network's 2.30.
EXPLODED_LOSS = 1e4


def loss_trouble(values: dict) -> str | None:
    """"key=value" of the first non-finite value in ``values`` (one monitoring record or
    window of means), or of a loss above :data:`EXPLODED_LOSS`; None when all are sane."""
    for key, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if not math.isfinite(v) or (key.endswith("loss") and abs(v) > EXPLODED_LOSS):
            return f"{key}={v:.3g}"
    return None


def judge_history(history: list[dict]) -> str | None:
    """Why a run's monitoring ``history`` shows it diverged ("... at step N"), or None."""
    for h in history:
        trouble = loss_trouble({k: v for k, v in h.items() if k.endswith("loss")})
        if trouble:
            return f"{trouble} at step {h.get('step', '?')}"
    return None


class Method:
    """What a method supplies to :func:`fit`. Subclasses set ``name``, ``seeds``,
    ``config`` and implement ``step``, ``predict`` and ``modules``.

    - ``step(xs, ys, xt, p) -> dict[str, Tensor]``: one update on a source batch
      ``xs (B, ...)``/``ys (B,)`` and a target batch ``xt (B, ...)`` (leading seed axis
      ``K`` when ``len(seeds) > 1``, :class:`PerSeedMethod`); returns detached
      losses/metrics, scalars or ``(K,)``.
    - ``predict(x) -> logits``: ``(N, n_classes)``, or ``(K, N, n_classes)`` for K seeds.
    - ``schedule(p) -> dict``: the schedule values at progress p (e.g. lambda, lr), logged.
    - ``modules(i) -> dict[str, nn.Module]``: seed ``i``'s trained networks (for saving).
    - ``uses_target``: whether the loop must sample target batches.

    The recipe is the base's, not each method's (:meth:`update`, which :func:`fit` calls): the
    learning rate ``config.lr_at(p)`` of every optimiser in :meth:`scheduled_optimizers` before each step
    (where the config has ``lr_at``), bfloat16 autocast around the step for
    ``config.precision == "bf16"``, and channels_last convolution weights for every network in
    :meth:`networks` once construction ends (``config.channels_last``; None: on the CPU).

    :meth:`run` is every method's one entry point for a training run (``dannlib.methods.train``
    calls it): by default it builds the method for each seed and calls :func:`fit`;
    multi-stage methods (ADDA) override it.
    """

    name: str = "method"
    seeds: list[int]
    uses_target: bool = True
    config: object = None
    Config: type | None = None

    def __init__(self, config, source: Domain, target: Domain | None, seeds, name: str | None = None):
        self.config = config.validate()
        self.seeds = check_seeds(seeds)
        self.name = name or type(self).__name__.lower()

    def __init_subclass__(cls, **kwargs):
        # after the outermost __init__ of a method has built its networks: channels_last
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def __init__(self, *args, **kw):
            init(self, *args, **kw)
            if type(self).__init__ is __init__:
                self._use_channels_last()

        cls.__init__ = __init__

    def _use_channels_last(self) -> None:
        nets = self.networks()
        params = [p for net in nets for p in net.parameters()]
        flag = getattr(self.config, "channels_last", None)
        if flag is None:
            flag = bool(params) and params[0].device.type == "cpu"
        if flag:
            for net in nets:
                net.to(memory_format=torch.channels_last)

    def networks(self) -> list[nn.Module]:
        """Every network the method computes with (each once), for channels_last; default: every
        seed's :meth:`modules`."""
        nets = {id(m): m for i in range(len(self.seeds)) for m in self.modules(i).values()}
        return list(nets.values())

    def scheduled_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers whose learning rate :meth:`update` sets from ``config.lr_at``; default:
        the method's attribute ``optimizer`` (one) and/or ``optimizers`` (one per seed)."""
        one = getattr(self, "optimizer", None)
        return ([one] if one is not None else []) + list(getattr(self, "optimizers", []))

    def update(self, xs, ys, xt, p: float) -> dict:
        """One training step with the recipe applied: the learning rates at ``p``, autocast per
        ``config.precision``, then :meth:`step`."""
        lr_at = getattr(self.config, "lr_at", None)
        if lr_at is not None:
            lr = lr_at(p)
            for opt in self.scheduled_optimizers():
                for group in opt.param_groups:
                    group["lr"] = lr
        with self.autocast(xs.device):
            return self.step(xs, ys, xt, p)

    def autocast(self, device: torch.device):
        """bfloat16 autocast on ``device`` where ``config.precision == "bf16"``, else a no-op."""
        if getattr(self.config, "precision", "fp32") == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def batched(self) -> bool:
        return len(self.seeds) > 1

    def step(self, xs, ys, xt, p: float) -> dict:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def schedule(self, p: float) -> dict:
        return {}

    def modules(self, i: int) -> dict[str, nn.Module]:
        raise NotImplementedError

    def train(self, mode: bool = True):
        for i in range(len(self.seeds)):
            for m in self.modules(i).values():
                m.train(mode)
        return self

    @classmethod
    def total_steps(cls, config) -> int:
        """How many steps :meth:`run` trains for (``config.steps`` unless a stage says otherwise)."""
        return config.steps

    # -- what the run store (dannlib.store) asks of a method's class, given a config ------------
    #: whether :meth:`run` takes ``pretrained=``: the results of the runs of :meth:`dependencies`
    accepts_pretrained: bool = False

    @classmethod
    def dependencies(cls, config) -> list[tuple[str, dict]]:
        """The runs a run of ``config`` starts from: ``(registered method, settings)`` on its data and seed."""
        return []

    @classmethod
    def blank(cls, config, data: Domain, seed: int) -> dict[str, nn.Module]:
        """Untrained networks of a run (seed ``seed``'s :meth:`modules`) for samples and classes like
        ``data``'s, to load its stored weights into."""
        return cls(config, data, data, [seed]).modules(0)

    @classmethod
    def steps_per_second(cls, config, data: dict) -> float:
        """Measured on the study's CPU (one thread) at batch 32 + 32 on the digits network: DANN's 57."""
        return 57

    @classmethod
    def cost_steps(cls, config, data: dict) -> float:
        """A run's cost in DANN-step equivalents, for the sweep's estimates (``data``: its data spec):
        the steps at :meth:`steps_per_second`, scaled by the batch size, times 20 on VADA's small CNN
        (about 20x the digits network's multiply-adds a step); toys run about 2,000 steps a second."""
        if data.get("kind") == "toy":
            return config.steps * 57 / 2000
        net = 20 if getattr(config, "network", None) == "vada_small" else 1
        return net * config.steps * config.batch_size / 32 * 57 / cls.steps_per_second(config, data)

    @classmethod
    def run(cls, config, source: Domain, target: Domain, seeds, *, eval_sets=None, progress=True,
            name: str | None = None, monitor_size: int = 2000) -> list["RunResult"]:
        """Train ``config`` on ``source`` -> ``target`` for each seed, one seed after another;
        one :class:`RunResult` per seed."""
        results = []
        for seed in check_seeds(seeds):
            method = cls(config, source, target, [seed], name=name)
            results += fit(method, source, target, steps=cls.total_steps(config), batch_size=config.batch_size,
                           eval_sets=eval_sets, eval_every=config.eval_every, progress=progress,
                           monitor_size=monitor_size)
        return results


class PerSeedMethod(Method):
    """A method that keeps one independent set of networks per seed and loops over the
    seeds inside ``step`` (ADDA, CDAN, IIMT). Subclasses implement ``step_one(i, xs, ys, xt, p)``
    for seed index ``i`` on that seed's ``(B, ...)`` batches, and ``predict_one(i, x)``."""

    def step_one(self, i: int, xs, ys, xt, p: float) -> dict:
        raise NotImplementedError

    def predict_one(self, i: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step(self, xs, ys, xt, p: float) -> dict:
        if not self.batched:
            return self.step_one(0, xs, ys, xt, p)
        outs = [self.step_one(i, xs[i], ys[i], None if xt is None else xt[i], p) for i in range(len(self.seeds))]
        return {k: torch.stack([torch.as_tensor(o[k]) for o in outs]) for k in outs[0]}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        logits = [self.predict_one(i, x) for i in range(len(self.seeds))]
        return torch.stack(logits) if self.batched else logits[0]


@dataclass
class RunResult:
    """One seed's training run: the method's name and config, the monitoring ``history``
    (one dict per logged step), the ``final`` evaluation (the numbers to report), the
    timing, the trained networks (``modules``), and ``parts``: earlier stages of a
    multi-stage method (ADDA's ``{"pretrain": RunResult}``)."""

    method: str
    seed: int
    config: dict
    history: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0
    modules: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    parts: dict[str, "RunResult"] = field(default_factory=dict, repr=False)

    @property
    def status(self) -> str:
        return self.final.get("status", "ok")


@torch.no_grad()
def accuracy(predict: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Top-1 accuracy of ``predict`` on ``(x, y)``: a scalar tensor, or ``(K,)`` when
    ``predict`` returns ``(K, N, C)`` logits for K seeds."""
    correct = None
    for i in range(0, len(x), batch_size):
        logits = predict(x[i:i + batch_size])
        c = (logits.argmax(-1) == y[i:i + batch_size]).sum(-1)
        correct = c if correct is None else correct + c
    return correct.double() / len(x)


def _as_list(value, k: int) -> list[float]:
    if isinstance(value, torch.Tensor):
        v = value.detach().double().cpu()
        return v.tolist() if v.ndim else [v.item()] * k
    return [float(value)] * k


class _LossWindow:
    """Running sums of the step outputs since the last log; ``means()`` -> per-seed lists."""

    def __init__(self, k: int):
        self.k, self.sums, self.n = k, {}, 0

    def add(self, out: dict) -> None:
        for key, v in out.items():
            v = v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            self.sums[key] = v if key not in self.sums else self.sums[key] + v
        self.n += 1

    def means(self) -> dict[str, list[float]]:
        out = {key: _as_list(v / self.n, self.k) for key, v in self.sums.items()}
        self.sums, self.n = {}, 0
        return out


def evaluate(method: Method, eval_sets: dict[str, Domain], limit: int | None = None) -> dict[str, list[float]]:
    """``{"<name>_acc": [per-seed accuracy]}`` on each evaluation set (its first ``limit``
    samples; None: all), with the method's networks in eval mode."""
    k = len(method.seeds)
    method.train(False)
    try:
        return {f"{name}_acc": _as_list(accuracy(method.predict, d.x[:limit], d.y[:limit]), k)
                for name, d in eval_sets.items()}
    finally:
        method.train(True)


def fit(method: Method, source: Domain, target: Domain | None, *, steps: int, batch_size: int,
        eval_sets: dict[str, Domain] | None = None, eval_every: int | None = None,
        monitor_size: int = 2000, progress: bool = True, desc: str | None = None) -> list[RunResult]:
    """Train ``method`` for ``steps`` steps on labelled ``source`` and (unlabelled) ``target``;
    one :class:`RunResult` per seed of the method.

    Every ``eval_every`` steps (default: 20 records per run) it logs, per seed, the mean
    losses since the last record, the schedule values the logged step used (computed at
    ``(step - 1) / steps``; the record's ``p`` is the progress after it, ``step / steps``) and
    the accuracy on the first
    ``monitor_size`` samples of each evaluation set (monitoring curves only: nothing is
    selected on them). At the end it evaluates each set in full; ``final`` holds those
    numbers, which are the ones to report. A non-finite loss marks that seed ``diverged``
    (its numbers are kept but flagged, and a message is printed); once every seed has diverged
    the run stops, and no exception is raised, so callers carry on with other seeds and methods.

    ``eval_sets`` maps names (e.g. ``"source_test"``, ``"target_test"``) to labelled
    domains; target labels are used only here, never by the method.
    """
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    eval_every = check_positive_int("eval_every", eval_every) if eval_every else max(1, steps // 20)
    eval_sets = dict(eval_sets or {})
    check_domains(source, target if method.uses_target else None, eval_sets)
    if method.uses_target and target is None:
        raise ValueError(f"{method.name} needs a target domain")
    seeds = list(method.seeds)
    k = len(seeds)
    batches = Batches(source, target.unlabelled() if method.uses_target else None, seeds, batch_size)
    window = _LossWindow(k)
    history: list[dict] = []
    status, messages = ["ok"] * k, [""] * k
    start = time.perf_counter()
    bar = progress_bar(steps, desc or f"{method.name} (seed{'s' if k > 1 else ''} {', '.join(map(str, seeds))})",
                       progress)
    method.train(True)
    try:
        for step in range(steps):
            p = step / steps
            window.add(method.update(*batches.next(), p))
            if (step + 1) % eval_every == 0 or step == steps - 1:
                means = window.means()
                accs = evaluate(method, eval_sets, monitor_size)
                sched = method.schedule(p)
                for i, seed in enumerate(seeds):
                    rec = {"step": step + 1, "seed": seed, "p": (step + 1) / steps, **sched}
                    rec.update({key: vals[i] for key, vals in means.items()})
                    rec.update({key: vals[i] for key, vals in accs.items()})
                    trouble = loss_trouble({key: vals[i] for key, vals in means.items()})
                    if status[i] == "ok" and trouble:
                        status[i] = "diverged"
                        kind = ("exploded" if all(math.isfinite(vals[i]) for vals in means.values())
                                else "non-finite")
                        messages[i] = (f"{method.name}: {kind} loss at step {step + 1} (seed {seed}): "
                                       + ", ".join(f"{key}={vals[i]:.4g}" for key, vals in means.items())
                                       + "; this seed is recorded as diverged and left out of the means")
                        _warn(messages[i], bar)
                    rec["status"] = status[i]
                    history.append(rec)
                if bar is not None:
                    bar.set_postfix({key: f"{sum(v) / k:.3f}" for key, v in accs.items()}, refresh=False)
                if all(s != "ok" for s in status):
                    _warn(f"stopping {method.name} at step {step + 1}: every seed has diverged", bar)
                    break
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    finals = evaluate(method, eval_sets)
    method.train(False)
    config = _config_dict(method.config)
    results = []
    for i, seed in enumerate(seeds):
        final = {"seed": seed, "status": status[i], "steps": steps, "seconds": seconds}
        if messages[i]:
            final["message"] = messages[i]
        final.update({key: vals[i] for key, vals in finals.items()})
        results.append(RunResult(method=method.name, seed=seed, config=config,
                                 history=[h for h in history if h["seed"] == seed], final=final,
                                 seconds=seconds, steps=steps, modules=method.modules(i)))
    return results


def _config_dict(config) -> dict:
    from dataclasses import asdict, is_dataclass

    return asdict(config) if is_dataclass(config) else dict(config or {})


def _warn(message: str, bar) -> None:
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


def progress_bar(total: int, desc: str, enabled: bool = True, **kwargs):
    """A tqdm.auto bar (a widget in JupyterLab, text in a terminal), or None when disabled by
    the caller or by ``$DANNLIB_PROGRESS=0`` (set by ``dannlib regenerate`` for the kernels it
    runs, so that no progress-bar text is saved into notebooks)."""
    if not (enabled and progress_enabled()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, mininterval=1.0, leave=kwargs.pop("leave", False), **kwargs)
