"""Seeded toy domain-shift problems, each a :class:`ToyProblem` of float32 points ``xs (N, 2)``,
``xt (N, 2)`` and int64 labels ``ys (N,)``, ``yt (N,)`` (target labels for evaluation only): seed
003's Gaussian blobs, translated (:func:`make_blobs_shift`), and the inter-twinning moons of Ganin et
al. (JMLR 2016, sec. 5.1.1), rotated (:func:`make_moons_rotated`)."""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from .utils import check_choice, check_number, check_positive_int

ToyProblem = namedtuple("ToyProblem", "name xs ys xt yt")


def make_blobs_shift(n: int = 300, seed: int = 0, shift: tuple[float, float] = (1.0, -1.0)) -> ToyProblem:
    """Source: class 0 around (0, 0), class 1 around (0, 1), isotropic std 0.2; target: the same
    blobs moved by ``shift`` (a source-only boundary misclassifies about half). ``n`` per domain."""
    n = check_positive_int("n", n)
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [0.0, 1.0]])

    def domain(offset):
        y = np.arange(n) % 2
        rng.shuffle(y)
        x = centers[y] + np.asarray(offset) + 0.2 * rng.standard_normal((n, 2))
        return x.astype(np.float32), y.astype(np.int64)

    return ToyProblem("blobs", *domain((0.0, 0.0)), *domain(shift))


def _moons(n: int, rng: np.random.Generator):
    y = np.arange(n) % 2
    rng.shuffle(y)
    t = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(t), np.sin(t)], 1)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)
    return np.where(y[:, None] == 0, upper, lower) + 0.1 * rng.standard_normal((n, 2)), y.astype(np.int64)


def make_moons_rotated(n: int = 300, seed: int = 0, angle: float = 35.0) -> ToyProblem:
    """Two inter-twinning moons (class 0 upper, class 1 lower, noise std 0.1), centred; the target is an
    independent draw rotated by ``angle`` degrees about the centre of the data."""
    n = check_positive_int("n", n)
    check_number("angle", angle, " of degrees", minimum=None)
    rng = np.random.default_rng(seed)
    centre = np.array([0.5, 0.25])
    (xs, ys), (xt, yt) = _moons(n, rng), _moons(n, rng)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return ToyProblem("moons", (xs - centre).astype(np.float32), ys, ((xt - centre) @ rot.T).astype(np.float32), yt)


TOYS = {"blobs": make_blobs_shift, "moons": make_moons_rotated}


def make_toy(name: str, **kwargs) -> ToyProblem:
    check_choice("toy problem", name, TOYS)
    return TOYS[name](**kwargs)
