"""The one training loop. Every method (source-only, DANN, ADDA, IIMT, ...) plugs in as a
:class:`Method` that owns its networks and optimisers and implements ``step``; the loop
draws the batches, feeds the schedules' progress ``p``, evaluates, logs, watches for
divergence and shows a progress bar. Methods differ in their step, not in copies of a loop.

Several seeds can train together: a method built for ``K`` seeds receives batches shaped
``(K, B, ...)`` (one independent batch per seed, each drawn from that seed's own generator)
and returns per-seed losses of shape ``(K,)``. Seed ``k`` of a K-seed run draws exactly
the batches a single-seed run with the same seed draws, so the two agree to float
tolerance (see ``tests/test_multiseed.py``).

Data never leaves the training device: batches are gathered by index from tensors already
there, no per-sample ``DataLoader``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .utils import check_positive_int, make_generator


@dataclass
class Domain:
    """One domain's images or points as tensors on the training device.

    ``x``: ``(N, ...)`` float32; ``y``: ``(N,)`` int64 labels, or None where the labels are
    not to be used (unlabelled target)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor | None = None

    def __post_init__(self):
        if self.x.ndim < 2:
            raise ValueError(f"domain {self.name!r}: x must be (N, ...) with N samples, got shape {tuple(self.x.shape)}")
        if len(self.x) == 0:
            raise ValueError(f"domain {self.name!r} has no samples")
        if self.y is not None and len(self.y) != len(self.x):
            raise ValueError(f"domain {self.name!r}: {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device) -> "Domain":
        return Domain(self.name, self.x.to(device), None if self.y is None else self.y.to(device))

    def unlabelled(self) -> "Domain":
        return Domain(self.name, self.x, None)


class IndexSampler:
    """Shuffled epochs over ``n`` indices from one seeded generator, ``batch_size`` at a
    time; the remainder of an epoch is dropped. Indices are drawn on ``device``."""

    def __init__(self, n: int, batch_size: int, seed: int, device):
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} samples of the domain; lower batch_size")
        self.n, self.batch_size, self.device = n, batch_size, torch.device(device)
        self.generator = make_generator(seed, self.device)
        self._perm: torch.Tensor | None = None
        self._pos = n

    def next(self) -> torch.Tensor:
        if self._pos + self.batch_size > self.n:
            self._perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx


class Method:
    """What a method supplies to :func:`fit`. Subclasses set ``name``, ``seeds`` and
    implement ``step`` and ``predict``.

    - ``step(xs, ys, xt, p) -> dict[str, Tensor]``: one update on a source batch
      ``xs (B, ...)``/``ys (B,)`` and a target batch ``xt (B, ...)`` (leading seed axis
      ``K`` when ``len(seeds) > 1``); returns detached losses/metrics, scalars or ``(K,)``.
    - ``predict(x) -> logits``: ``(N, n_classes)``, or ``(K, N, n_classes)`` for K seeds.
    - ``schedule(p) -> dict``: the schedule values at progress p (e.g. lambda, lr), logged.
    - ``uses_source_labels`` / ``uses_target``: what the loop must sample.
    """

    name: str = "method"
    seeds: list[int]
    uses_target: bool = True

    @property
    def batched(self) -> bool:
        return len(self.seeds) > 1

    def step(self, xs, ys, xt, p: float) -> dict:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def schedule(self, p: float) -> dict:
        return {}

    def train(self, mode: bool = True):  # pragma: no cover - overridden where needed
        return self


@dataclass
class RunResult:
    """What :func:`fit` returns: the trained method (its networks inside), the history (one
    record per logged step and seed), the final evaluation per seed, and the timing."""

    method: Method
    history: list[dict] = field(default_factory=list)
    final: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0

    def final_for(self, seed: int) -> dict:
        return next(r for r in self.final if r["seed"] == seed)


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


def fit(method: Method, source: Domain, target: Domain, *, steps: int, batch_size: int,
        eval_sets: dict[str, Domain] | None = None, eval_every: int | None = None,
        monitor_size: int = 2000, progress: bool = True, desc: str | None = None) -> RunResult:
    """Train ``method`` for ``steps`` steps on labelled ``source`` and (unlabelled) ``target``.

    Every ``eval_every`` steps (default: 20 records per run) it logs, per seed, the mean
    losses since the last record, the schedule values and the accuracy on the first
    ``monitor_size`` samples of each evaluation set (monitoring curves only: nothing is
    selected on them). At the end it evaluates each set in full; ``final`` holds those
    numbers, which are the ones to report. A non-finite loss marks that seed ``diverged``
    (its numbers are kept but flagged, and a message is printed); once every seed has diverged
    the run stops, its records carry the message, and no exception is raised, so callers
    carry on with other seeds and methods.

    ``eval_sets`` maps names (e.g. ``"source_test"``, ``"target_test"``) to labelled
    domains; target labels are used only here, never by the method.
    """
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    if source.y is None:
        raise ValueError(f"source domain {source.name!r} needs labels (y)")
    eval_every = check_positive_int("eval_every", eval_every) if eval_every else max(1, steps // 20)
    eval_sets = dict(eval_sets or {})
    for name, d in eval_sets.items():
        if d.y is None:
            raise ValueError(f"evaluation set {name!r} needs labels")
    seeds = list(method.seeds)
    k = len(seeds)
    device = source.x.device
    src_samplers = [IndexSampler(len(source), batch_size, 2 * s, device) for s in seeds]
    tgt_samplers = [IndexSampler(len(target), batch_size, 2 * s + 1, device) for s in seeds] if method.uses_target else None

    def gather(domain: Domain, samplers, with_labels: bool):
        if k == 1:
            idx = samplers[0].next()
            return domain.x[idx], (domain.y[idx] if with_labels else None)
        idx = torch.stack([s.next() for s in samplers])  # (K, B)
        x = domain.x[idx.reshape(-1)].reshape(k, batch_size, *domain.x.shape[1:])
        y = domain.y[idx.reshape(-1)].reshape(k, batch_size) if with_labels else None
        return x, y

    result = RunResult(method=method, steps=steps)
    status = ["ok"] * k
    messages = [""] * k
    sums: dict[str, torch.Tensor] = {}
    n_in_sum = 0
    start = time.perf_counter()
    bar = _progress_bar(steps, desc or f"{method.name} ({k} seed{'s' if k > 1 else ''})", progress)
    method.train(True)
    try:
        for step in range(steps):
            p = step / steps
            xs, ys = gather(source, src_samplers, True)
            xt = gather(target, tgt_samplers, False)[0] if tgt_samplers else None
            out = method.step(xs, ys, xt, p)
            for key, v in out.items():
                v = v.detach()
                sums[key] = v if key not in sums else sums[key] + v
            n_in_sum += 1
            last = step == steps - 1
            if (step + 1) % eval_every == 0 or last:
                means = {key: _as_list(v / n_in_sum, k) for key, v in sums.items()}
                sched = method.schedule(p)
                method.train(False)
                accs = {f"{name}_acc": _as_list(accuracy(method.predict, d.x[:monitor_size], d.y[:monitor_size]), k)
                        for name, d in eval_sets.items()}
                method.train(True)
                for i, seed in enumerate(seeds):
                    rec = {"step": step + 1, "seed": seed, "p": (step + 1) / steps, **sched}
                    rec.update({key: vals[i] for key, vals in means.items()})
                    rec.update({key: vals[i] for key, vals in accs.items()})
                    if status[i] == "ok" and not all(math.isfinite(vals[i]) for vals in means.values()):
                        status[i] = "diverged"
                        messages[i] = (f"{method.name}: non-finite loss at step {step + 1} (seed {seed}): "
                                       + ", ".join(f"{key}={vals[i]}" for key, vals in means.items())
                                       + "; this seed is recorded as diverged and left out of the means")
                        _warn(messages[i], bar)
                    rec["status"] = status[i]
                    result.history.append(rec)
                sums, n_in_sum = {}, 0
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
    result.seconds = time.perf_counter() - start
    method.train(False)
    finals = {f"{name}_acc": _as_list(accuracy(method.predict, d.x, d.y), k) for name, d in eval_sets.items()}
    for i, seed in enumerate(seeds):
        rec = {"seed": seed, "status": status[i], "steps": steps, "seconds": result.seconds}
        if messages[i]:
            rec["message"] = messages[i]
        rec.update({key: vals[i] for key, vals in finals.items()})
        result.final.append(rec)
    return result


def _warn(message: str, bar) -> None:
    import sys

    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, mininterval=1.0, leave=False)
