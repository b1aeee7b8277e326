"""The digit domains of the study: MNIST, USPS, and MNIST-M built from MNIST and BSDS500.

Where the data live
-------------------
A *data root* (``data_root``) holds the raw files, laid out like the project's shared copy::

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   (torchvision's MNIST layout)
    USPS_h5/usps.h5                   (or torchvision's USPS/usps.bz2 + USPS/usps.t.bz2)
    BSDS500/images/train/*.jpg        (the Berkeley Segmentation Dataset 500, train split)

The data root may be read-only; everything derived from it (the MNIST-M arrays) goes to a
separate *cache* folder (``cache_dir``).

One scale, one size
-------------------
Every loader returns uint8 images (0-255). ``to_tensor_domain`` turns any of them into a
float32 tensor ``(N, C, size, size)`` in ``[0, 1]`` (bilinear resize, grey tiled to three
channels), so that MNIST, USPS and MNIST-M share one value scale and one size. Mean
subtraction belongs to the training code, not here.

MNIST-M
-------
Ganin & Lempitsky (ICML 2015), "Unsupervised Domain Adaptation by Backpropagation", sec. 5:
each MNIST digit is blended over a random crop of a random BSDS500 *train* image,
``out = |patch - digit|`` per channel, the digit binarised to 0/255 and tiled to RGB.
The crops are drawn once per build from a seeded generator (never per epoch), so a build is
a fixed data set; ``load_mnist_m`` caches it on disk with its parameters and a checksum.
"""
from __future__ import annotations

import bz2
import contextlib
import functools
import gzip
import hashlib
import json
import operator
import os
import shutil
import tarfile
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .utils import PROJECT_ROOT, atomic_write, check_choice, check_positive_int, resolve_device

SPLITS = ("train", "test")
DOMAINS = ("mnist", "mnist_m", "usps")

#: Threshold of the MNIST-M binarisation: a digit pixel > 127 becomes 255, else 0.
MNIST_M_THRESHOLD = 127
#: Version of the MNIST-M construction and cache format; bump it when either changes.
MNIST_M_FORMAT_VERSION = 1

#: The BSDS500 archive (about 70 MB); its inner layout is ``BSR/BSDS500/data/images/{train,val,test}/*.jpg``.
#: No checksum is pinned here (none could be confirmed offline): pass ``md5=`` to verify.
BSDS500_URL = "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz"
BSDS500_MD5: str | None = None

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_USPS_BZ2 = {"train": "usps.bz2", "test": "usps.t.bz2"}
_FIX = ("Fix: point the data root at a copy of the data (set DANNLIB_DATA=/path/to/data, or pass "
        "root=/path/to/data, the notebooks' data_root parameter), or allow the download (download=True).")


class DataNotFoundError(FileNotFoundError):
    """A data set is missing from the data root. The message names the data set, every path
    searched, and the two fixes (point ``DANNLIB_DATA`` at a copy, or ``download=True``)."""

    def __init__(self, dataset: str, searched: Sequence[os.PathLike | str], hint: str = ""):
        paths = "\n".join(f"  - {p}" for p in searched)
        msg = f"{dataset} not found. Searched:\n{paths}\n{_FIX}"
        if hint:
            msg += "\n" + hint
        super().__init__(msg)
        self.dataset = dataset
        self.searched = [str(p) for p in searched]


class DataChecksumError(ValueError):
    """A data file exists but its checksum is not the expected one (truncated or wrong file)."""


# --------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------

def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$DANNLIB_DATA``, else ``PROJECT_ROOT/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("DANNLIB_DATA")
    if env:
        return Path(env).expanduser()
    return PROJECT_ROOT / "data"


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """Where derived arrays go: ``cache`` if given, else ``$DANNLIB_CACHE``, else
    ``PROJECT_ROOT/data/cache`` (never inside a possibly read-only data root)."""
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get("DANNLIB_CACHE")
    if env:
        return Path(env).expanduser()
    return PROJECT_ROOT / "data" / "cache"


def _check_split(split: str) -> str:
    check_choice("split", split, SPLITS)
    return split


def _file_digest(path: Path, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_md5(path: Path, expected: str, dataset: str) -> None:
    actual = _file_digest(path, "md5")
    if actual != expected:
        raise DataChecksumError(
            f"{dataset}: {path} has MD5 {actual}, expected {expected} (torchvision's list): the file is "
            f"truncated or not the original. Delete it and copy it again, or delete it and load with "
            f"download=True.")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------

def _mnist_md5s() -> dict[str, str]:
    import torchvision

    return dict(torchvision.datasets.MNIST.resources)


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise ValueError(f"{path} is not an IDX file of the expected kind (magic {got}, expected {magic})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


@functools.lru_cache(maxsize=8)
def _load_mnist_cached(split: str, raw_dir: str) -> tuple[np.ndarray, np.ndarray]:
    md5 = _mnist_md5s()
    img_name, lbl_name = _MNIST_FILES[split]
    for name in (img_name, lbl_name):
        _check_md5(Path(raw_dir) / name, md5[name], "MNIST")
    images = _read_idx(Path(raw_dir) / img_name, 2051, 3).copy()
    labels = _read_idx(Path(raw_dir) / lbl_name, 2049, 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"MNIST {split}: {len(images)} images but {len(labels)} labels in {raw_dir}")
    return _readonly(images), _readonly(labels)


def load_mnist(split: str = "train", root=None, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("train": 60,000, "test": 10,000) as ``(images uint8 (N, 28, 28),
    labels int64 (N,))``, read from the IDX archives in ``root/MNIST/raw`` after checking their
    MD5 against torchvision's list. Missing files are downloaded with torchvision if
    ``download``. Parsed arrays are kept in memory; each call returns fresh copies."""
    _check_split(split)
    root = data_root(root)
    raw = root / "MNIST" / "raw"
    paths = [raw / name for name in _MNIST_FILES[split]]
    if not all(p.is_file() for p in paths):
        if not download:
            raise DataNotFoundError("MNIST", paths)
        import torchvision

        torchvision.datasets.MNIST(str(root), train=(split == "train"), download=True)
    images, labels = _load_mnist_cached(split, str(raw.resolve()))
    return images.copy(), labels.copy()


# --------------------------------------------------------------------------------------
# USPS
# --------------------------------------------------------------------------------------

def _usps_md5s() -> dict[str, str]:
    import torchvision

    return {name: md5 for _, name, md5 in torchvision.datasets.USPS.split_list.values()}


def _read_usps_libsvm(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's USPS format: LIBSVM text, ``label idx:value ...`` with labels 1-10 and
    values in [-1, 1] (absent indices mean 0). Returns floats in [-1, 1] (N, 256), labels 0-9."""
    rows, labels = [], []
    with bz2.open(path, "rt") as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            labels.append(int(float(parts[0])) - 1)
            row = np.zeros(256, dtype=np.float64)
            for item in parts[1:]:
                i, v = item.split(":")
                row[int(i) - 1] = float(v)
            rows.append(row)
    return np.stack(rows), np.asarray(labels, dtype=np.int64)


@functools.lru_cache(maxsize=8)
def _load_usps_cached(split: str, source: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    if source == "h5":
        import h5py

        with h5py.File(path, "r") as f:
            x = np.asarray(f[f"{split}/data"], dtype=np.float64)
            y = np.asarray(f[f"{split}/target"]).astype(np.int64)
        x01 = x
    else:
        _check_md5(Path(path), _usps_md5s()[Path(path).name], "USPS")
        x, y = _read_usps_libsvm(Path(path))
        x01 = (x + 1.0) / 2.0
    images = np.clip(np.round(x01 * 255.0), 0, 255).astype(np.uint8).reshape(-1, 16, 16)
    if len(images) != len(y) or y.min() < 0 or y.max() > 9:
        raise ValueError(f"USPS {split} at {path}: {len(images)} images, {len(y)} labels in [{y.min()}, {y.max()}]")
    return _readonly(images), _readonly(y)


def load_usps(split: str = "train", root=None, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """USPS ``split`` (7,291 train / 2,007 test) as ``(images uint8 (N, 16, 16), labels int64)``.

    Source, one for both splits so that they share one preprocessing: ``root/USPS_h5/usps.h5``
    when it exists (floats in [0, 1] -> ``round(255 x)``); otherwise torchvision's format in
    ``root/USPS/usps{,.t}.bz2`` (values in [-1, 1] -> ``round(255 (x + 1) / 2)``, labels 1-10
    -> 0-9). An h5 train split is never paired with a bz2 test split. With ``download`` and no
    h5 file, torchvision downloads both bz2 splits."""
    _check_split(split)
    root = data_root(root)
    h5 = root / "USPS_h5" / "usps.h5"
    if h5.is_file():
        images, labels = _load_usps_cached(split, "h5", str(h5.resolve()))
        return images.copy(), labels.copy()
    usps_dir = root / "USPS"
    bz = usps_dir / _USPS_BZ2[split]
    if not bz.is_file():
        if not download:
            raise DataNotFoundError("USPS", [h5, bz])
        import torchvision

        for s in SPLITS:  # both splits, so that train and test come from one format
            torchvision.datasets.USPS(str(usps_dir), train=(s == "train"), download=True)
    images, labels = _load_usps_cached(split, "bz2", str(bz.resolve()))
    return images.copy(), labels.copy()


# --------------------------------------------------------------------------------------
# BSDS500 (backgrounds of MNIST-M: train split only)
# --------------------------------------------------------------------------------------

def bsds500_train_dir(root=None) -> Path:
    return data_root(root) / "BSDS500" / "images" / "train"


def bsds500_train_files(root=None) -> list[Path]:
    """The BSDS500 train images ``root/BSDS500/images/train/*.jpg``, sorted by file name."""
    folder = bsds500_train_dir(root)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.suffix.lower() == ".jpg" and p.is_file()), key=lambda p: p.name)


def backgrounds_fingerprint(files: Sequence[Path]) -> str:
    """sha256 of the sorted ``name:size`` list of the background files (cheap: no reading)."""
    text = "\n".join(f"{p.name}:{p.stat().st_size}" for p in sorted(files, key=lambda p: p.name))
    return hashlib.sha256(text.encode()).hexdigest()


def _is_train_jpg(name: str) -> str | None:
    """The file name of an archive member ``*/images/train/<name>.jpg``, else None. Rejects
    absolute paths and any ``..`` component (no path traversal)."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or len(p.parts) < 3:
        return None
    if p.parts[-3:-1] != ("images", "train") or p.suffix.lower() != ".jpg":
        return None
    base = p.name
    if base.startswith(".") or "/" in base or "\\" in base:
        return None
    return base


def download_bsds500(root=None, url: str = BSDS500_URL, md5: str | None = BSDS500_MD5) -> Path:
    """Download the BSDS500 archive from ``url`` (urllib; ``file://`` works too), check its
    MD5 if ``md5`` is given, and extract only the ``*/images/train/*.jpg`` members into
    ``root/BSDS500/images/train/``. Members are written by base name only (no path traversal,
    no links); the folder appears atomically (extracted to a temporary folder, then renamed).
    Returns the train folder; does nothing if it already holds images."""
    target = bsds500_train_dir(root)
    if bsds500_train_files(root):
        return target
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    fd, archive = tempfile.mkstemp(prefix=".bsds500-", suffix=".tgz", dir=parent)
    os.close(fd)
    tmpdir = Path(tempfile.mkdtemp(prefix=".train-", dir=parent))
    try:
        h = hashlib.md5()
        with urllib.request.urlopen(url) as resp, open(archive, "wb") as out:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if md5 is not None and h.hexdigest() != md5:
            raise DataChecksumError(f"BSDS500 archive from {url} has MD5 {h.hexdigest()}, expected {md5}; "
                                    f"the download is corrupt or the URL serves another file")
        n = 0
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = _is_train_jpg(member.name)
                if base is None or not member.isfile():
                    continue
                src = tar.extractfile(member)
                with open(tmpdir / base, "wb") as out:
                    shutil.copyfileobj(src, out)
                n += 1
        if n == 0:
            raise ValueError(f"the archive from {url} holds no */images/train/*.jpg member; is it BSR_bsds500.tgz?")
        if target.exists():
            target.rmdir()  # an empty folder (there were no images): replace it
        os.rename(tmpdir, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(archive)
        if tmpdir.exists():
            shutil.rmtree(tmpdir, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=4)
def _load_images_cached(files: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, ...]:
    from PIL import Image

    out = []
    for path, _, _ in files:
        with Image.open(path) as im:
            out.append(_readonly(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()))
    return tuple(out)


def load_bsds500_train(root=None, download: bool = False, url: str = BSDS500_URL,
                       md5: str | None = BSDS500_MD5) -> list[np.ndarray]:
    """The BSDS500 *train* images (200 for the real set) as uint8 ``(H, W, 3)`` arrays,
    sorted by file name, read with PIL. Only the train split is ever used for MNIST-M.
    Kept in memory (keyed on the files' names, sizes and mtimes); returns read-only arrays."""
    files = bsds500_train_files(root)
    if not files:
        if not download:
            raise DataNotFoundError("BSDS500 (train images, *.jpg)", [bsds500_train_dir(root)])
        download_bsds500(root, url=url, md5=md5)
        files = bsds500_train_files(root)
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return list(_load_images_cached(key))


# --------------------------------------------------------------------------------------
# MNIST-M (Ganin & Lempitsky 2015)
# --------------------------------------------------------------------------------------

def _check_seed(seed) -> int:
    try:
        if isinstance(seed, bool):
            raise TypeError
        seed = operator.index(seed)
    except TypeError:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}") from None
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return seed


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
    md5 = _mnist_md5s()
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
        "mnist_md5": [md5[name] for name in _MNIST_FILES[split]],
        "backgrounds": "BSDS500/images/train",
        "n_backgrounds": len(files),
        "backgrounds_sha256": backgrounds_fingerprint(files),
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
    digits, labels = load_mnist(split, root, download=download)
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


def _read_mnist_m_cache(path: Path, params: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays if the file is readable, was built with ``params`` and its checksum
    holds; else None (with a warning saying why, unless the file does not exist)."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            stored = {k: v for k, v in meta.get("params", {}).items() if k not in ("build_seconds", "n")}
            if stored != params:
                diff = sorted(k for k in set(stored) | set(params) if stored.get(k) != params.get(k))
                warnings.warn(f"MNIST-M cache {path} was built with other parameters ({', '.join(diff)}); rebuilding",
                              stacklevel=3)
                return None
            images, labels = z["images"], z["labels"]
        if _array_sha256(images, labels) != meta["sha256"]:
            warnings.warn(f"MNIST-M cache {path} fails its checksum; rebuilding", stacklevel=3)
            return None
        return images, labels
    except Exception as e:  # any unreadable cache is rebuilt, never a crash
        warnings.warn(f"MNIST-M cache {path} is unreadable ({type(e).__name__}: {e}); rebuilding", stacklevel=3)
        return None


def load_mnist_m(split: str = "train", root=None, cache=None, seed: int = 0, size: int = 28,
                 rebuild: bool = False, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-M ``split`` as ``(images uint8 (N, size, size, 3), labels int64 (N,))``, built by
    ``build_mnist_m`` with build seed ``2 * seed + {train: 0, test: 1}`` from all MNIST digits
    of the split and the BSDS500 train images.

    Cached at ``cache_dir(cache)/mnist_m/{split}_s{seed}_{size}.npz`` with its parameters
    (format version, seed, size, split, MNIST checksums, sha256 of the background file
    names and sizes) and a sha256 of the arrays; rebuilt (and rewritten atomically) when
    ``rebuild``, when the parameters differ, or when the file is unreadable or corrupt."""
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
    meta = {"params": built, "sha256": _array_sha256(images, labels)}
    with atomic_write(path, "wb") as fh:
        np.savez(fh, images=images, labels=labels, meta=np.array(json.dumps(meta, sort_keys=True)))
    return images, labels


# --------------------------------------------------------------------------------------
# One scale, one size
# --------------------------------------------------------------------------------------

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

    name: "mnist", "mnist_m" or "usps"; n: a random subset of ``n`` examples drawn without
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
