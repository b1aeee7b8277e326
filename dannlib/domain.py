"""A domain's data as tensors on the training device (:class:`Domain`), the up-front checks every
method shares (:func:`check_domains`), and the seeded batches drawn from it (:class:`Batches`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .utils import make_generator


@dataclass
class Domain:
    """One domain's images or points on the training device: ``x (N, ...)`` float, finite;
    ``y (N,)`` integer labels >= 0 (stored int64), or None where they are not to be used."""

    name: str
    x: torch.Tensor
    y: torch.Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.x, torch.Tensor) or self.x.ndim < 2:
            shape = tuple(self.x.shape) if hasattr(self.x, "shape") else type(self.x).__name__
            raise ValueError(f"domain {self.name!r}: x must be a tensor (N, ...) with N samples, got {shape}")
        if len(self.x) == 0:
            raise ValueError(f"domain {self.name!r} has no samples")
        if not self.x.is_floating_point():
            raise ValueError(f"domain {self.name!r}: x must be a float tensor, got {self.x.dtype}")
        lo, hi = torch.aminmax(self.x)  # NaN propagates into both: one pass, no mask
        if not (math.isfinite(lo) and math.isfinite(hi)):
            n = int((~torch.isfinite(self.x)).flatten(1).any(1).sum())
            raise ValueError(f"domain {self.name!r}: x holds NaN or infinite values in {n} of {len(self.x)} "
                             "samples; clean or drop them before training or evaluating")
        if self.y is not None:
            if len(self.y) != len(self.x):
                raise ValueError(f"domain {self.name!r}: {len(self.x)} inputs but {len(self.y)} labels")
            if self.y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                raise ValueError(f"domain {self.name!r}: labels y must be integers, got {self.y.dtype}")
            if int(self.y.min()) < 0:
                raise ValueError(f"domain {self.name!r}: labels y must be >= 0, got min {int(self.y.min())}")
            self.y = self.y.long()

    def __len__(self) -> int:
        return len(self.x)

    @property
    def n_classes(self) -> int:
        if self.y is None:
            raise ValueError(f"domain {self.name!r} has no labels")
        return int(self.y.max()) + 1

    def unlabelled(self) -> "Domain":
        return Domain(self.name, self.x, None)


def check_domains(source: Domain, target: Domain | None, eval_sets: dict | None = None) -> None:
    """Labelled source, one sample shape for source, target and evaluation sets, and evaluation
    labels inside the source's classes; errors name the domain and the fix."""
    if not isinstance(source, Domain):
        raise ValueError(f"source must be a dannlib.training.Domain, got {type(source).__name__}")
    if source.y is None:
        raise ValueError(f"source domain {source.name!r} needs labels (y)")
    shape = tuple(source.x.shape[1:])
    for role, d in ([("target", target)] if target is not None else []) + list((eval_sets or {}).items()):
        if not isinstance(d, Domain):
            raise ValueError(f"{role} must be a dannlib.training.Domain, got {type(d).__name__}")
        if tuple(d.x.shape[1:]) != shape:
            raise ValueError(f"{role} {d.name!r} has samples of shape {tuple(d.x.shape[1:])} but the source "
                             f"{source.name!r} has {shape}: put every domain on one size and channel count "
                             "(e.g. load_domain(..., size=28, channels=3))")
    for name, d in (eval_sets or {}).items():
        if d.y is None:
            raise ValueError(f"evaluation set {name!r} needs labels")
        if int(d.y.max()) >= source.n_classes:
            raise ValueError(f"evaluation set {name!r} has label {int(d.y.max())} but the source "
                             f"{source.name!r} only has classes 0..{source.n_classes - 1}")


class IndexSampler:
    """Shuffled epochs over ``n`` indices, ``batch_size`` at a time (the remainder dropped), from one
    generator seeded ``seed`` on ``device``."""

    def __init__(self, n: int, batch_size: int, seed: int, device):
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} samples of the domain; lower batch_size")
        self.n, self.batch_size, self.device = n, batch_size, torch.device(device)
        self.generator = make_generator(seed, self.device)
        self._pos = n

    def next(self) -> torch.Tensor:
        if self._pos + self.batch_size > self.n:
            self._perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self._pos = 0
        self._pos += self.batch_size
        return self._perm[self._pos - self.batch_size:self._pos]


class Batches:
    """The batches of a K-seed run: seed ``s`` draws its source batches from a generator seeded
    ``2 s`` and its target batches from one seeded ``2 s + 1``. ``next()``: ``(xs, ys, xt)``,
    ``(B, ...)`` for one seed, ``(K, B, ...)`` for several; ``xt`` None without a target."""

    def __init__(self, source: Domain, target: Domain | None, seeds: list[int], batch_size: int):
        self.source, self.target, self.k, self.batch_size = source, target, len(seeds), batch_size
        device = source.x.device
        self.src = [IndexSampler(len(source), batch_size, 2 * s, device) for s in seeds]
        self.tgt = None if target is None else [IndexSampler(len(target), batch_size, 2 * s + 1, device) for s in seeds]

    def _gather(self, domain: Domain, samplers):
        idx = torch.cat([s.next() for s in samplers])  # (K * B,)
        shape = (self.k, self.batch_size) if self.k > 1 else (self.batch_size,)
        y = None if domain.y is None else domain.y[idx].reshape(shape)
        return domain.x[idx].reshape(*shape, *domain.x.shape[1:]), y

    def next(self):
        xs, ys = self._gather(self.source, self.src)
        return xs, ys, None if self.tgt is None else self._gather(self.target, self.tgt)[0]
