"""One scale, one size: the digit domains of the study (MNIST, USPS, MNIST-M) as float32
tensors in [0, 1], ready for the networks of Ganin & Lempitsky (2015, sec. 5) and ADDA
(Tzeng et al. 2017), plus exact per-channel pixel statistics.

Every loader returns uint8 images (0-255). ``to_tensor_domain`` turns any of them into a
float32 tensor ``(N, C, size, size)`` in ``[0, 1]`` (bilinear resize, grey tiled to three
channels), so that MNIST, USPS and MNIST-M share one value scale and one size. Mean
subtraction belongs to the training code, not here.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import check_choice, check_positive_int, resolve_device
from .common import _check_seed, _check_split
from .digits import load_mnist, load_usps
from .mnist_m import load_mnist_m
from .mnist_m_released import load_mnist_m_released

#: "mnist_m" is the study's own build from MNIST and BSDS500; "mnist_m_released" the data set the
#: papers measured on (32x32, resized to ``size`` like every domain).
DOMAINS = ("mnist", "mnist_m", "mnist_m_released", "usps")

#: ITU-R BT.601 luma weights, used to turn RGB (MNIST-M) into grey when channels=1.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def to_tensor_domain(images_uint8: np.ndarray, size: int = 28, channels: int = 1) -> torch.Tensor:
    """uint8 images (N, H, W) grey or (N, H, W, 3) RGB -> float32 tensor (N, channels, size,
    size) in [0, 1] (value / 255). Resized with bilinear interpolation
    (``F.interpolate``, ``align_corners=False``; antialiased when shrinking) if H, W != size;
    grey tiled to 3 channels when ``channels=3``; RGB turned to grey with the BT.601 luma
    weights when ``channels=1``. No mean subtraction (the training code does that)."""
    size = check_positive_int("size", size)
    check_choice("channels", channels, (1, 3))
    x = images_uint8
    if isinstance(x, torch.Tensor):
        x = x.cpu().numpy()
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise ValueError(f"images_uint8 must be a uint8 array (0-255), got "
                         f"{getattr(x, 'dtype', type(x).__name__)}; the loaders return uint8")
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[3] == 3)):
        raise ValueError(f"images_uint8 must have shape (N, H, W) or (N, H, W, 3), got {x.shape}")
    n, h, w = x.shape[:3]
    out = torch.empty((n, channels, size, size), dtype=torch.float32)
    for s in range(0, n, 4096):
        t = torch.from_numpy(np.ascontiguousarray(x[s:s + 4096])).float().div_(255.0)
        t = t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)
        if t.shape[1] == 3 and channels == 1:
            t = (t * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
        if (h, w) != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < max(h, w)).clamp_(0.0, 1.0)
        out[s:s + 4096] = t.expand(-1, channels, -1, -1)
    return out


def channel_histograms(images_uint8: np.ndarray) -> np.ndarray:
    """Pixel counts per channel: uint8 (N, H, W) or (N, H, W, C) -> int64 (C, 256)."""
    x = np.asarray(images_uint8)
    if x.dtype != np.uint8:
        raise ValueError(f"images_uint8 must be uint8, got {x.dtype}")
    x = x[..., None] if x.ndim == 3 else x
    counts = np.zeros((x.shape[-1], 256), dtype=np.int64)
    for s in range(0, len(x), 2048):  # in chunks: bincount casts to int64 internally
        for c in range(x.shape[-1]):
            counts[c] += np.bincount(x[s:s + 2048, ..., c].ravel(), minlength=256)
    return counts


def channel_stats(images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the pixels on the [0, 1] scale, computed
    exactly from ``channel_histograms`` (no float copy of the images): two float64 (C,)."""
    counts = channel_histograms(images_uint8).astype(np.float64)
    v = np.arange(256) / 255.0
    total = counts.sum(1)
    mean = counts @ v / total
    var = counts @ (v ** 2) / total - mean ** 2
    return mean, np.sqrt(np.maximum(var, 0.0))


def load_domain(name: str, split: str, root=None, size: int = 28, channels: int = 3, n: int | None = None,
                seed: int = 0, device=None, *, mnist_m_seed: int = 0, cache=None,
                download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One digit domain as ``(x float32 (N, channels, size, size) in [0, 1], y int64 (N,))``
    on ``device`` (default ``dannlib.utils.default_device()``).

    name: "mnist", "mnist_m" (our build), "mnist_m_released" (the papers' data) or "usps"; n: a random subset of ``n`` examples drawn without
    replacement with ``np.random.default_rng(seed)`` and kept in data-set order (e.g. ADDA's
    2,000 MNIST / 1,800 USPS); None: the whole split. MNIST-M is built at ``size`` with its
    own ``mnist_m_seed`` (the data set stays fixed while ``seed`` picks subsets)."""
    check_choice("name", name, DOMAINS)
    _check_split(split)
    seed = _check_seed(seed)
    if name == "mnist":
        images, labels = load_mnist(split, root, download=download)
    elif name == "usps":
        images, labels = load_usps(split, root, download=download)
    elif name == "mnist_m_released":
        images, labels = load_mnist_m_released(split, root, cache=cache, download=download)
    else:
        images, labels = load_mnist_m(split, root, cache=cache, seed=mnist_m_seed, size=size, download=download)
    if n is not None:
        n = check_positive_int("n", n)
        if n > len(images):
            raise ValueError(f"n={n} exceeds the {len(images)} examples of {name} {split}; use n <= {len(images)} or None")
        idx = np.sort(np.random.default_rng(seed).choice(len(images), size=n, replace=False))
        images, labels = images[idx], labels[idx]
    device = resolve_device(device)
    x = to_tensor_domain(images, size=size, channels=channels)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
    return x.to(device), y.to(device)
