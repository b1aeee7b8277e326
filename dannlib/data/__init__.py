"""The digit domains of the study (MNIST, USPS, MNIST-M built from MNIST and BSDS500, the released MNIST-M) as
float32 tensors in [0, 1] (``load_domain``). Raw files live under a data root (``data_root``; layout:
data/README.md), derived arrays in a cache folder (``cache_dir``). Modules, each importing only those before it:
``common``, ``digits``, ``mnist_m``, ``mnist_m_released``, ``fingerprint``; patch a function where it is defined."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import check_choice, check_positive_int, resolve_device
from .common import (SPLITS, CacheNotWritableError, DataChecksumError, DataNotFoundError, _check_seed, _check_split,
                     cache_dir, check_cache_writable, data_root, read_sha256sums)
from .digits import load_mnist, load_usps
from .mnist_m import (MNIST_M_FORMAT_VERSION, backgrounds_fingerprint, binarise_digits, blend_mnist_m,
                      bsds500_train_digests, bsds500_train_dir, bsds500_train_files, build_mnist_m, download_bsds500,
                      draw_mnist_m_crops, load_bsds500_train, load_mnist_m, mnist_m_blend_steps, mnist_m_cache_path,
                      mnist_m_seed)
from .mnist_m_released import load_mnist_m_released, released_cache_path

#: the public names (the imports above also bind the modules, through which tests reach their helpers)
__all__ = ["backgrounds_fingerprint", "binarise_digits", "blend_mnist_m", "bsds500_train_digests",
           "bsds500_train_dir", "bsds500_train_files", "build_mnist_m", "cache_dir", "CacheNotWritableError",
           "channel_histograms", "channel_stats", "check_cache_writable", "data_root", "DataChecksumError",
           "DataNotFoundError", "DOMAINS", "download_bsds500", "draw_mnist_m_crops", "load_bsds500_train",
           "load_domain", "load_mnist", "load_mnist_m", "load_mnist_m_released", "load_usps", "mnist_m_blend_steps",
           "mnist_m_cache_path", "MNIST_M_FORMAT_VERSION", "mnist_m_seed", "read_sha256sums", "released_cache_path",
           "SPLITS", "to_tensor_domain"]

DOMAINS = ("mnist", "mnist_m", "mnist_m_released", "usps")
_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601


def to_tensor_domain(images_uint8: np.ndarray, size: int = 28, channels: int = 1) -> torch.Tensor:
    """uint8 images (N, H, W) grey or (N, H, W, 3) RGB -> float32 (N, channels, size, size) in [0, 1] (value /
    255): bilinear resize (``align_corners=False``, antialiased when shrinking), grey tiled to 3 channels, RGB to
    grey with the BT.601 luma weights when ``channels=1``. No mean subtraction (the training code does that)."""
    size = check_positive_int("size", size)
    check_choice("channels", channels, (1, 3))
    x = images_uint8.cpu().numpy() if isinstance(images_uint8, torch.Tensor) else images_uint8
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim not in (3, 4) or x.shape[3:] not in ((), (3,)):
        raise ValueError(f"images_uint8 must be a uint8 array (0-255) of shape (N, H, W) or (N, H, W, 3), as the "
                         f"loaders return, got {getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
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
    """Per-channel mean and standard deviation of the pixels on the [0, 1] scale, exactly from
    ``channel_histograms``: two float64 (C,)."""
    counts, v = channel_histograms(images_uint8).astype(np.float64), np.arange(256) / 255.0
    mean = counts @ v / counts.sum(1)
    return mean, np.sqrt(np.maximum(counts @ v ** 2 / counts.sum(1) - mean ** 2, 0.0))


def load_domain(name: str, split: str, root=None, size: int = 28, channels: int = 3, n: int | None = None,
                seed: int = 0, device=None, *, mnist_m_seed: int = 0, cache=None,  # noqa: F811
                download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One digit domain as ``(x float32 (N, channels, size, size) in [0, 1], y int64 (N,))`` on ``device``.
    name: one of ``DOMAINS`` ("mnist_m": our build, at ``size`` with its own ``mnist_m_seed``;
    "mnist_m_released": the papers' data); n: a subset of ``n`` drawn without replacement by
    ``np.random.default_rng(seed)``, kept in data-set order (None: the whole split)."""
    check_choice("name", name, DOMAINS)
    _check_split(split)
    seed = _check_seed(seed)
    if name in ("mnist", "usps"):
        images, labels = (load_mnist if name == "mnist" else load_usps)(split, root, download=download)
    elif name == "mnist_m_released":
        images, labels = load_mnist_m_released(split, root, cache=cache, download=download)
    else:
        images, labels = load_mnist_m(split, root, cache=cache, seed=mnist_m_seed, size=size, download=download)
    if n is not None:
        if check_positive_int("n", n) > len(images):
            raise ValueError(f"n={n} exceeds the {len(images)} examples of {name} {split}; use n <= {len(images)} "
                             f"or None")
        idx = np.sort(np.random.default_rng(seed).choice(len(images), size=n, replace=False))
        images, labels = images[idx], labels[idx]
    device = resolve_device(device)
    return to_tensor_domain(images, size, channels).to(device), torch.from_numpy(labels.astype(np.int64)).to(device)
