"""MNIST-M (Ganin & Lempitsky 2015, "Unsupervised Domain Adaptation by Backpropagation",
ICML, sec. 5): each MNIST digit blended over a random crop of a random BSDS500 *train* image,
``out = |patch - digit|`` per channel, the digit binarised to 0/255 and tiled to RGB.

The crops are drawn once per build from a seeded generator (never per epoch), so a build is
a fixed data set. ``load_mnist_m`` caches it on disk with its parameters (among them a
fingerprint of the backgrounds' contents) and a checksum of the arrays; a cache folder that
refuses writes gives an in-memory build and one warning.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import atomic_write, check_positive_int
from . import common, digits as _digits
from .bsds500 import (backgrounds_fingerprint, bsds500_train_digests, bsds500_train_dir, bsds500_train_files,
                      download_bsds500, load_bsds500_train)
from .common import SPLITS, DataNotFoundError, _check_seed, _check_split, cache_dir

#: Threshold of the MNIST-M binarisation: a digit pixel > 127 becomes 255, else 0.
MNIST_M_THRESHOLD = 127
#: Version of the MNIST-M construction and cache format; bump it when either changes.
#: 2: the backgrounds are fingerprinted by their contents (1: by file names and sizes).
MNIST_M_FORMAT_VERSION = 2


def _check_digits(digits) -> np.ndarray:
    if not isinstance(digits, np.ndarray) or digits.dtype != np.uint8:
        kind = type(digits).__name__ if not isinstance(digits, np.ndarray) else f"array of {digits.dtype}"
        raise ValueError(f"digits must be a uint8 numpy array (N, H, W) with values 0-255, got {kind}; "
                         f"pass MNIST as load_mnist returns it")
    if digits.ndim != 3 or digits.shape[1] != digits.shape[2]:
        raise ValueError(f"digits must have shape (N, H, W) with H == W (e.g. (N, 28, 28)), got {digits.shape}")
    return digits


def _check_backgrounds(backgrounds, size: int) -> list[np.ndarray]:
    if backgrounds is None or len(backgrounds) == 0:
        raise ValueError("backgrounds is empty: pass at least one uint8 (H, W, 3) image, "
                         "e.g. load_bsds500_train(root)")
    out = []
    for i, b in enumerate(backgrounds):
        if not isinstance(b, np.ndarray) or b.dtype != np.uint8 or b.ndim != 3 or b.shape[2] != 3:
            desc = f"{b.dtype} array of shape {b.shape}" if isinstance(b, np.ndarray) else type(b).__name__
            raise ValueError(f"backgrounds[{i}] must be a uint8 (H, W, 3) RGB array, got {desc}")
        if b.shape[0] < size or b.shape[1] < size:
            raise ValueError(f"backgrounds[{i}] is {b.shape[0]}x{b.shape[1]}, smaller than the {size}x{size} "
                             f"crop: use larger images or a smaller size")
        out.append(b)
    return out


def binarise_digits(digits: np.ndarray, size: int = 28) -> np.ndarray:
    """MNIST-M's digit mask: uint8 (N, H, H) -> uint8 (N, size, size) with values {0, 255}.

    If ``size != H`` the grey digit is first resized with bilinear interpolation
    (``torch.nn.functional.interpolate``, ``align_corners=False``), then thresholded:
    pixel > ``MNIST_M_THRESHOLD`` (127) -> 255, else 0."""
    digits = _check_digits(digits)
    size = check_positive_int("size", size)
    if digits.shape[1] != size:
        out = np.empty((len(digits), size, size), dtype=np.uint8)
        for s in range(0, len(digits), 8192):
            x = torch.from_numpy(digits[s:s + 8192].astype(np.float32))[:, None]
            y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < digits.shape[1])
            out[s:s + 8192] = (y[:, 0].numpy() > MNIST_M_THRESHOLD).astype(np.uint8) * np.uint8(255)
        return out
    return (digits > MNIST_M_THRESHOLD).astype(np.uint8) * np.uint8(255)


def draw_mnist_m_crops(n: int, background_shapes: Sequence[tuple[int, ...]], seed: int,
                       size: int = 28) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The random draws of one MNIST-M build, all made up front from
    ``np.random.default_rng(seed)``: for each of ``n`` digits a background index (uniform over
    the list), then the crop's top row and left column (uniform over the valid positions).
    Returns int64 arrays ``(background_index, top, left)``, each (n,)."""
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)
    heights = np.array([s[0] for s in background_shapes], dtype=np.int64)
    widths = np.array([s[1] for s in background_shapes], dtype=np.int64)
    bg = rng.integers(0, len(heights), size=n, dtype=np.int64)
    top = rng.integers(0, heights[bg] - size + 1, dtype=np.int64) if n else np.zeros(0, np.int64)
    left = rng.integers(0, widths[bg] - size + 1, dtype=np.int64) if n else np.zeros(0, np.int64)
    return bg, np.asarray(top, np.int64).reshape(n), np.asarray(left, np.int64).reshape(n)


def blend_mnist_m(digits: np.ndarray, backgrounds: Sequence[np.ndarray], seed: int, size: int = 28) -> np.ndarray:
    """MNIST-M (Ganin & Lempitsky 2015): ``|patch - digit|`` per channel.

    digits: uint8 (N, H, H) grey digits (MNIST: H = 28); backgrounds: non-empty list of uint8
    (H_b, W_b, 3) images, each at least ``size`` x ``size``; seed: the build's seed.
    Returns uint8 (N, size, size, 3).

    The digit is binarised (``binarise_digits``: bilinear resize to ``size`` if needed, then
    > 127 -> 255 else 0) and tiled to 3 channels; for digit i a background and a
    ``size`` x ``size`` crop are drawn (``draw_mnist_m_crops``, all up front); the output is
    ``abs(patch.astype(int16) - digit3.astype(int16)).astype(uint8)``: the background where
    the digit is 0, its colour inverse (255 - patch) where the digit is 255. Deterministic
    under ``seed``; the draws are made once per build, never per epoch."""
    digits = _check_digits(digits)
    size = check_positive_int("size", size)
    backgrounds = _check_backgrounds(backgrounds, size)
    seed = _check_seed(seed)
    mask = binarise_digits(digits, size)
    n = len(mask)
    bg, top, left = draw_mnist_m_crops(n, [b.shape for b in backgrounds], seed, size)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    offs = np.arange(size)
    order = np.argsort(bg, kind="stable")
    bounds = np.searchsorted(bg[order], np.arange(len(backgrounds) + 1))
    for b, image in enumerate(backgrounds):
        idx = order[bounds[b]:bounds[b + 1]]
        if len(idx) == 0:
            continue
        rows = (top[idx, None] + offs)[:, :, None]   # (k, size, 1)
        cols = (left[idx, None] + offs)[:, None, :]  # (k, 1, size)
        patch = image[rows, cols].astype(np.int16)    # (k, size, size, 3)
        out[idx] = np.abs(patch - mask[idx, :, :, None].astype(np.int16)).astype(np.uint8)
    return out


def mnist_m_blend_steps(digits: np.ndarray, backgrounds: Sequence[np.ndarray], seed: int, size: int = 28,
                        indices: Sequence[int] = (0, 1, 2, 3)) -> list[dict]:
    """The intermediate images of ``blend_mnist_m(digits, backgrounds, seed, size)`` for the
    digits ``indices`` (for figures): a dict per digit with ``digit``, ``binarised`` (size,
    size), ``background_index``, ``background`` (H, W, 3), ``top``, ``left``, ``size``,
    ``patch`` (size, size, 3) and ``blend`` (size, size, 3) -- the same draws as the full build."""
    digits = _check_digits(digits)
    size = check_positive_int("size", size)
    backgrounds = _check_backgrounds(backgrounds, size)
    bg, top, left = draw_mnist_m_crops(len(digits), [b.shape for b in backgrounds], seed, size)
    steps = []
    for i in indices:
        mask = binarise_digits(digits[i:i + 1], size)[0]
        image = backgrounds[bg[i]]
        patch = image[top[i]:top[i] + size, left[i]:left[i] + size]
        blend = np.abs(patch.astype(np.int16) - mask[:, :, None].astype(np.int16)).astype(np.uint8)
        steps.append({"index": int(i), "digit": digits[i], "binarised": mask, "background_index": int(bg[i]),
                      "background": image, "top": int(top[i]), "left": int(left[i]), "size": size,
                      "patch": patch, "blend": blend})
    return steps


def mnist_m_seed(seed: int, split: str) -> int:
    """The seed of one split's build: ``2 * seed + {train: 0, test: 1}`` (train and test never
    share draws)."""
    return 2 * _check_seed(seed) + SPLITS.index(_check_split(split))


def _mnist_m_params(split: str, root, seed: int, size: int, n: int | None, download: bool) -> tuple[dict, list[Path]]:
    files = bsds500_train_files(root)
    if not files:
        if not download:
            raise DataNotFoundError("BSDS500 (train images, *.jpg), the backgrounds of MNIST-M",
                                    [bsds500_train_dir(root)])
        download_bsds500(root)
        files = bsds500_train_files(root)
    md5 = _digits._mnist_md5s()
    params = {
        "format_version": MNIST_M_FORMAT_VERSION,
        "dataset": "mnist_m",
        "split": split,
        "seed": seed,
        "build_seed": mnist_m_seed(seed, split),
        "size": size,
        "n_digits": n,
        "threshold": MNIST_M_THRESHOLD,
        "digit_resize": "bilinear",
        "mnist_md5": [md5[name] for name in _digits._MNIST_FILES[split]],
        "backgrounds": "BSDS500/images/train",
        "n_backgrounds": len(files),
        "backgrounds_sha256": backgrounds_fingerprint(files, bsds500_train_digests(root, files)),
    }
    return params, files


def build_mnist_m(split: str = "train", root=None, seed: int = 0, size: int = 28, n: int | None = None,
                  download: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """Build MNIST-M ``split`` from the MNIST split and the BSDS500 *train* images, without
    any cache: ``(images uint8 (N, size, size, 3), labels int64 (N,), params)``. ``n``: use
    only the first ``n`` MNIST digits (quick looks); None: all of them (60,000 / 10,000; the
    official set has 59,001 / 9,001 at 32x32). ``params`` records the construction and
    ``build_seconds``."""
    _check_split(split)
    seed = _check_seed(seed)
    size = check_positive_int("size", size)
    if n is not None:
        n = check_positive_int("n", n)
    params, _ = _mnist_m_params(split, root, seed, size, n, download)
    t0 = time.perf_counter()
    digits, labels = _digits.load_mnist(split, root, download=download)
    if n is not None:
        if n > len(digits):
            raise ValueError(f"n={n} exceeds the {len(digits)} MNIST {split} digits")
        digits, labels = digits[:n], labels[:n]
    backgrounds = load_bsds500_train(root, download=download)
    images = blend_mnist_m(digits, backgrounds, params["build_seed"], size)
    params["n"] = int(len(images))
    params["build_seconds"] = time.perf_counter() - t0
    return images, labels, params


def _array_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).reshape(-1).view(np.uint8))  # no copy of the arrays
    h.update(np.ascontiguousarray(labels).reshape(-1).view(np.uint8))
    return h.hexdigest()


def mnist_m_cache_path(split: str, seed: int = 0, size: int = 28, cache=None) -> Path:
    return cache_dir(cache) / "mnist_m" / f"{split}_s{seed}_{size}.npz"


def _read_mnist_m_cache(path: Path, params: dict, what: str = "MNIST-M",
                        redo: str = "rebuilding") -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays if the file is readable, was built with ``params`` and its checksum
    holds; else None (with a warning naming ``what`` and saying why and ``redo``, unless the file
    does not exist). Also reads the released MNIST-M's cache (``mnist_m_released``)."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            stored = {k: v for k, v in meta.get("params", {}).items() if k not in ("build_seconds", "n")}
            if stored != params:
                diff = sorted(k for k in set(stored) | set(params) if stored.get(k) != params.get(k))
                warnings.warn(f"{what} cache {path} was built with other parameters ({', '.join(diff)}); {redo}",
                              stacklevel=3)
                return None
            images, labels = z["images"], z["labels"]
        if _array_sha256(images, labels) != meta["sha256"]:
            warnings.warn(f"{what} cache {path} fails its checksum; {redo}", stacklevel=3)
            return None
        return images, labels
    except Exception as e:  # any unreadable cache is rebuilt, never a crash
        warnings.warn(f"{what} cache {path} is unreadable ({type(e).__name__}: {e}); {redo}", stacklevel=3)
        return None


def _write_mnist_m_cache(path: Path, images: np.ndarray, labels: np.ndarray, params: dict) -> bool:
    """Write the cache file atomically; True if written. A folder that refuses writes
    (``common._writable`` says no, or the write fails with EROFS, EACCES or EPERM) gives
    one warning naming the folder, ``DANNLIB_CACHE`` and the fix, and False; any other
    error propagates."""
    folder = path.parent
    if common._writable(folder):
        meta = {"params": params, "sha256": _array_sha256(images, labels)}
        try:
            with atomic_write(path, "wb") as fh:
                np.savez(fh, images=images, labels=labels, meta=np.array(json.dumps(meta, sort_keys=True)))
            return True
        except OSError as e:
            if e.errno not in common.READ_ONLY_ERRNOS:
                raise
    warnings.warn(f"MNIST-M built in memory and not cached: {common.cache_not_writable_message(folder)}",
                  stacklevel=3)
    return False


def load_mnist_m(split: str = "train", root=None, cache=None, seed: int = 0, size: int = 28,
                 rebuild: bool = False, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-M ``split`` as ``(images uint8 (N, size, size, 3), labels int64 (N,))``, built by
    ``build_mnist_m`` with build seed ``2 * seed + {train: 0, test: 1}`` from all MNIST digits
    of the split and the BSDS500 train images.

    Cached at ``cache_dir(cache)/mnist_m/{split}_s{seed}_{size}.npz`` with its parameters
    (format version, seed, size, split, MNIST checksums, sha256 of the background images'
    names and contents) and a sha256 of the arrays; rebuilt (and rewritten atomically) when
    ``rebuild``, when the parameters differ, or when the file is unreadable or corrupt. A
    cache folder that refuses writes (``DANNLIB_CACHE`` on a read-only file system) gives
    the arrays built in memory and one warning saying how to fix it."""
    _check_split(split)
    seed = _check_seed(seed)
    size = check_positive_int("size", size)
    params, _ = _mnist_m_params(split, root, seed, size, None, download)
    path = mnist_m_cache_path(split, seed, size, cache)
    if not rebuild:
        cached = _read_mnist_m_cache(path, params)
        if cached is not None:
            return cached
    images, labels, built = build_mnist_m(split, root, seed, size, None, download)
    _write_mnist_m_cache(path, images, labels, built)
    return images, labels
