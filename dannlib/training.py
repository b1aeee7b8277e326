"""The one training loop, :func:`fit`, for every :class:`Method` (which owns its networks and optimisers):
seeded batches, the progress ``p = step / steps``, the recipe, logging, evaluation, divergence watch and
progress bar. A method built for ``K`` seeds trains them in one :func:`fit` on batches ``(K, B, ...)``."""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Callable

import torch
from torch import nn

from .domain import Batches, Domain, check_domains
from .utils import check_positive_int, check_seeds, progress_enabled, seeded

#: A logged loss above this is an explosion (sane runs stay below ~50): the seed is recorded as diverged.
EXPLODED_LOSS = 1e4


def loss_trouble(values: dict) -> str | None:
    """"key=value" of the first non-finite number in ``values`` or loss (key "*loss") above :data:`EXPLODED_LOSS`."""
    for key, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (
                not math.isfinite(v) or key.endswith("loss") and abs(v) > EXPLODED_LOSS):
            return f"{key}={v:.3g}"
    return None


def judge_history(history: list[dict]) -> str | None:
    """Why a run's monitoring ``history`` shows it diverged ("... at step N"), or None."""
    for h in history:
        if trouble := loss_trouble({k: v for k, v in h.items() if k.endswith("loss")}):
            return f"{trouble} at step {h.get('step', '?')}"
    return None


class _ChannelsLast(type):
    """Once a method is built (its outermost ``__init__`` done), its :meth:`~Method.networks` go channels_last
    per ``config.channels_last`` (None: when they are on the CPU)."""

    def __call__(cls, *args, **kwargs):
        self = super().__call__(*args, **kwargs)
        nets, flag = self.networks(), getattr(self.config, "channels_last", None)
        if flag or flag is None and next((p.is_cpu for net in nets for p in net.parameters()), False):
            for net in nets:
                net.to(memory_format=torch.channels_last)
        return self


class Method(metaclass=_ChannelsLast):
    """What a method supplies to :func:`fit`: ``name``, ``seeds``, ``config``, ``uses_target``;
    ``step(xs, ys, xt, p) -> dict`` of detached losses (scalars, or ``(K,)``) after one update on source
    ``xs (B, ...)``, ``ys (B,)`` and target ``xt (B, ...)`` (``(K, B, ...)`` for K seeds); ``predict(x)``:
    logits ``(N, n)`` or ``(K, N, n)``; ``modules(i)``: seed ``i``'s trained networks by name.

    The base applies the recipe (:meth:`update`): ``config.lr_at(p)`` in ``optimizer``/``optimizers``,
    bf16 autocast for ``config.precision == "bf16"``, channels_last weights for :meth:`networks` once
    built (``config.channels_last``; None: on the CPU). :meth:`run` is a training run's entry point."""

    name: str = "method"
    seeds: list[int]
    uses_target: bool = True
    config: object = None
    Config: type | None = None

    def __init__(self, config, source: Domain, target: Domain | None, seeds, name: str | None = None):
        self.config = config.validate()
        self.seeds = check_seeds(seeds)
        self.name = name or type(self).__name__.lower()

    def networks(self) -> list[nn.Module]:
        """Every network the method computes with, each once; default: every seed's :meth:`modules`."""
        return list({id(m): m for i in range(len(self.seeds)) for m in self.modules(i).values()}.values())

    def update(self, xs, ys, xt, p: float) -> dict:
        """:meth:`step` with the recipe: the learning rates at ``p``, autocast per ``config.precision``."""
        if hasattr(self.config, "lr_at"):
            lr = self.config.lr_at(p)  # once a step, not once per parameter group
            for opt in [getattr(self, "optimizer", None), *getattr(self, "optimizers", [])]:
                for group in opt.param_groups if opt is not None else []:
                    group["lr"] = lr
        bf16 = getattr(self.config, "precision", "fp32") == "bf16"
        with torch.autocast(device_type=xs.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            return self.step(xs, ys, xt, p)

    @property
    def batched(self) -> bool:
        return len(self.seeds) > 1

    def schedule(self, p: float) -> dict:
        """The schedule values at ``p`` (e.g. lambda, lr), logged."""
        return {}

    def train(self, mode: bool = True):
        for i in range(len(self.seeds)):
            for m in self.modules(i).values():
                m.train(mode)

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
        """Untrained networks of a run (seed ``seed``'s :meth:`modules`) for data like ``data``: to load into."""
        return cls(config, data, data, [seed]).modules(0)

    @classmethod
    def steps_per_second(cls, config, data: dict) -> float:
        """Measured on the study's CPU (one thread) at batch 32 + 32 on the digits network: DANN's 57."""
        return 57

    @classmethod
    def cost_steps(cls, config, data: dict) -> float:
        """A run's cost in DANN-step equivalents for the sweep's estimates (``data``: its data spec); VADA's
        small CNN costs about 20x the digits network a step, toys run about 2,000 steps a second."""
        if data.get("kind") == "toy":
            return config.steps * 57 / 2000
        net = 20 if getattr(config, "network", None) == "vada_small" else 1
        return net * config.steps * config.batch_size / 32 * 57 / cls.steps_per_second(config, data)

    @classmethod
    def run(cls, config, source: Domain, target: Domain, seeds, *, eval_sets=None, progress=True,
            name: str | None = None, monitor_size: int = 2000) -> list["RunResult"]:
        """Train ``config`` on ``source`` -> ``target`` for each seed in turn; one :class:`RunResult` per seed."""
        return [r for seed in check_seeds(seeds)
                for r in fit(cls(config, source, target, [seed], name=name), source, target,
                             steps=cls.total_steps(config), batch_size=config.batch_size, eval_sets=eval_sets,
                             eval_every=config.eval_every, progress=progress, monitor_size=monitor_size)]


class PerSeedMethod(Method):
    """A method with independent networks per seed, looped over in ``step``: subclasses implement
    ``step_one(i, xs, ys, xt, p)`` on seed index ``i``'s ``(B, ...)`` batches and ``predict_one(i, x)``."""

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
    """One seed's run: method, config, monitoring ``history`` (a dict per logged step), ``final`` evaluation
    (the numbers to report), timing, trained ``modules`` and earlier stages (``parts``, ADDA's "pretrain")."""

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
    """Top-1 accuracy of ``predict`` on ``(x, y)``: a scalar tensor, or ``(K,)`` when ``predict``
    returns ``(K, N, C)`` logits for K seeds."""
    correct = sum((predict(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum(-1)
                  for i in range(0, len(x), batch_size))
    return correct.double() / len(x)


def _as_list(value, k: int) -> list[float]:
    """A scalar or ``(K,)`` step output as K floats."""
    v = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    return v.tolist() if v.ndim else [v.item()] * k


def evaluate(method: Method, eval_sets: dict[str, Domain], limit: int | None = None) -> dict[str, list[float]]:
    """``{"<name>_acc": [per-seed accuracy]}`` on each evaluation set's first ``limit`` samples, in eval mode."""
    method.train(False)
    try:
        return {f"{name}_acc": _as_list(accuracy(method.predict, d.x[:limit], d.y[:limit]), len(method.seeds))
                for name, d in eval_sets.items()}
    finally:
        method.train(True)


TRAIN_RNG_OFFSET = 2_000_003  # distinct from the seeds networks are built under (utils.seeded(seed))


def fit(method: Method, source: Domain, target: Domain | None, *, steps: int, batch_size: int,
        eval_sets: dict[str, Domain] | None = None, eval_every: int | None = None,
        monitor_size: int = 2000, progress: bool = True, desc: str | None = None) -> list[RunResult]:
    """Train ``method`` for ``steps`` steps on labelled ``source`` and unlabelled ``target``: one :class:`RunResult`
    per seed. Every ``eval_every`` steps (default: 20 records) it logs per seed the mean step outputs since the last
    record, the schedule values of the logged step (at ``(step - 1) / steps``; the record's ``p`` is ``step / steps``)
    and the accuracy on the first ``monitor_size`` samples of each of ``eval_sets`` (labelled domains by name, the
    only use of target labels); ``final``: on the full sets. A non-finite or exploded loss marks a seed ``diverged``;
    once all have, the run stops without raising (``steps`` then records the steps trained). The bar is off for
    ``progress=False`` or ``$DANNLIB_PROGRESS=0``. Torch's global generator (dropout, VADA's noise) is seeded with
    the first seed + ``TRAIN_RNG_OFFSET``, restored after."""
    from tqdm.auto import tqdm

    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    eval_every = check_positive_int("eval_every", eval_every) if eval_every else max(1, steps // 20)
    eval_sets = dict(eval_sets or {})
    check_domains(source, target if method.uses_target else None, eval_sets)
    if method.uses_target and target is None:
        raise ValueError(f"{method.name} needs a target domain")
    seeds, k = list(method.seeds), len(method.seeds)
    batches = Batches(source, target.unlabelled() if method.uses_target else None, seeds, batch_size)
    sums, n, history = {}, 0, []
    status, messages = ["ok"] * k, [""] * k
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=desc or f"{method.name} (seed{'s' if k > 1 else ''} {', '.join(map(str, seeds))})",
               mininterval=1.0, leave=False, disable=not (progress and progress_enabled()))
    method.train(True)
    with bar, seeded(seeds[0] + TRAIN_RNG_OFFSET):
        for step in range(steps):
            p = step / steps
            for key, v in method.update(*batches.next(), p).items():
                v = v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                sums[key] = sums[key] + v if key in sums else v
            n += 1
            if (step + 1) % eval_every == 0 or step == steps - 1:
                means = {key: _as_list(v / n, k) for key, v in sums.items()}
                sums, n = {}, 0
                accs, sched = evaluate(method, eval_sets, monitor_size), method.schedule(p)
                for i, seed in enumerate(seeds):
                    losses = {key: vals[i] for key, vals in means.items()}
                    if status[i] == "ok" and loss_trouble(losses):
                        status[i] = "diverged"
                        kind = "exploded" if all(map(math.isfinite, losses.values())) else "non-finite"
                        messages[i] = (f"{method.name}: {kind} loss at step {step + 1} (seed {seed}): "
                                       + ", ".join(f"{key}={v:.4g}" for key, v in losses.items())
                                       + "; this seed is recorded as diverged and left out of the means")
                        bar.write(messages[i], file=sys.stderr)
                    history.append({"step": step + 1, "seed": seed, "p": (step + 1) / steps, **sched, **losses,
                                    **{key: vals[i] for key, vals in accs.items()}, "status": status[i]})
                bar.set_postfix({key: f"{sum(v) / k:.3f}" for key, v in accs.items()}, refresh=False)
                if all(s != "ok" for s in status):
                    bar.write(f"stopping {method.name} at step {step + 1}: every seed has diverged", file=sys.stderr)
                    break
            bar.update(1)
    seconds, steps = time.perf_counter() - start, step + 1  # the steps trained (fewer when every seed diverged)
    finals = evaluate(method, eval_sets)
    method.train(False)
    config = asdict(method.config) if is_dataclass(method.config) else dict(method.config or {})
    return [RunResult(method=method.name, seed=seed, config=config, history=[h for h in history if h["seed"] == seed],
                      final={"seed": seed, "status": status[i], "steps": steps, "seconds": seconds,
                             **({"message": messages[i]} if messages[i] else {}),
                             **{key: vals[i] for key, vals in finals.items()}},
                      seconds=seconds, steps=steps, modules=method.modules(i))
            for i, seed in enumerate(seeds)]
