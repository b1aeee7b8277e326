"""MNIST-M (Ganin & Lempitsky 2015, "Unsupervised Domain Adaptation by Backpropagation", ICML, sec. 5): each
MNIST digit blended over a random crop of a random BSDS500 *train* image (Arbelaez et al. 2011), ``out =
|patch - digit|`` per channel, the digit binarised to 0/255 and tiled to RGB. The crops are drawn once per
build from a seeded generator, so a build is a fixed data set; ``load_mnist_m`` caches it on disk."""
from __future__ import annotations

import functools
import hashlib
import os
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import check_positive_int, file_digest
from .common import (SPLITS, DataChecksumError, DataNotFoundError, _check_seed, _check_split,
                     _readonly, cache_dir, cached, data_root, verify_sha256)
from .digits import load_mnist, mnist_md5

#: The BSDS500 archive (about 70 MB): ``BSR/BSDS500/data/images/{train,val,test}/*.jpg``; no MD5 pinned.
BSDS500_URL = "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz"
MNIST_M_THRESHOLD = 127  # of the binarisation: a digit pixel > 127 becomes 255, else 0
MNIST_M_FORMAT_VERSION = 2  # of the construction and cache (2: backgrounds fingerprinted by their contents)


def bsds500_train_dir(root=None, split: str = "train") -> Path:
    return data_root(root) / "BSDS500" / "images" / split


def bsds500_train_files(root=None, split: str = "train") -> list[Path]:
    """The BSDS500 images ``root/BSDS500/images/<split>/*.jpg``, sorted by file name."""
    folder = bsds500_train_dir(root, split)
    files = (p for p in folder.iterdir() if p.suffix.lower() == ".jpg" and p.is_file()) if folder.is_dir() else ()
    return sorted(files, key=lambda p: p.name)


def _bsds500_fix(path: Path) -> str:
    return (f"Fix: copy a good {path.name} into {path.parent} (or delete that folder and load with download=True, "
            f"which fetches the whole archive again), or point DANNLIB_DATA at a data root holding a good copy "
            f"of BSDS500/images/train.")


def bsds500_train_digests(root, files) -> list[str]:
    """The sha256 of each of ``files``, checked against ``SHA256SUMS``."""
    digests = [file_digest(p, "sha256") for p in files]
    verify_sha256(root, files, digests, "BSDS500", _bsds500_fix(Path(files[0])) if files else "")
    return digests


def backgrounds_fingerprint(files, digests=None) -> str:
    """sha256 of the sorted ``name:sha256(contents)`` lines of the background files (``digests``: their
    sha256 in the order of ``files``, if already computed)."""
    digests = [file_digest(p, "sha256") for p in files] if digests is None else digests
    if len(digests) != len(files):
        raise ValueError(f"{len(files)} files but {len(digests)} digests: pass one digest per file")
    text = "\n".join(f"{p.name}:{d}" for p, d in sorted(zip(files, digests), key=lambda t: t[0].name))
    return hashlib.sha256(text.encode()).hexdigest()


def download_bsds500(root=None, url: str = BSDS500_URL, md5: str | None = None) -> Path:
    """Download the archive from ``url`` (``file://`` too), check its MD5 if ``md5`` is given, extract its regular
    ``*/images/train/*.jpg`` members by base name (no absolute paths, ``..``, hidden files or links) into a
    temporary folder renamed to ``root/BSDS500/images/train``. Does nothing if that folder holds images."""
    if bsds500_train_files(root):
        return bsds500_train_dir(root)
    (target := bsds500_train_dir(root)).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bsds500-", dir=target.parent) as tmp:
        archive, folder = Path(tmp) / "archive.tgz", Path(tmp) / "train"
        folder.mkdir()
        urllib.request.urlretrieve(url, archive)
        if md5 is not None and (actual := file_digest(archive, "md5")) != md5:
            raise DataChecksumError(f"BSDS500 archive from {url} has MD5 {actual}, expected {md5}; the download "
                                    f"is corrupt or the URL serves another file", dataset="BSDS500")
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                p = PurePosixPath(member.name)
                if (member.isfile() and not p.is_absolute() and ".." not in p.parts and "\\" not in p.name
                        and p.parts[-3:-1] == ("images", "train") and p.suffix.lower() == ".jpg" and p.name[0] != "."):
                    (folder / p.name).write_bytes(tar.extractfile(member).read())
        if not any(folder.iterdir()):
            raise ValueError(f"the archive from {url} holds no */images/train/*.jpg member; is it BSR_bsds500.tgz?")
        if target.exists():
            target.rmdir()  # an empty folder (there were no images): replace it
        os.rename(folder, target)
    return target


def _decode_jpg(path: Path) -> np.ndarray:
    """One image as uint8 (H, W, 3) RGB; an undecodable file raises ``DataChecksumError`` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataChecksumError(f"BSDS500: {path} is damaged, truncated or not an image ({type(e).__name__}: {e}; "
                                f"{path.stat().st_size} bytes). {_bsds500_fix(path)}", dataset="BSDS500",
                                path=path) from e


@functools.lru_cache(maxsize=4)
def _load_images_cached(files: tuple[tuple[str, str], ...]) -> tuple[np.ndarray, ...]:
    return tuple(_readonly(_decode_jpg(Path(path))) for path, _ in files)


def _train_files(root, download: bool, url: str = BSDS500_URL, md5: str | None = None) -> tuple[list, list]:
    """The BSDS500 train images and their sha256, checked by ``bsds500_train_digests``."""
    if download:
        download_bsds500(root, url=url, md5=md5)  # nothing to do where the images are
    if not (files := bsds500_train_files(root)):
        raise DataNotFoundError("BSDS500 (train images, *.jpg), the backgrounds of MNIST-M", [bsds500_train_dir(root)])
    return files, bsds500_train_digests(root, files)


def load_bsds500_train(root=None, download: bool = False, url: str = BSDS500_URL, md5=None) -> list:
    """The BSDS500 train images (200) as read-only uint8 ``(H, W, 3)`` arrays sorted by file name, checked by
    ``bsds500_train_digests`` and kept in memory keyed on their paths and contents."""
    files, digests = _train_files(root, download, url, md5)
    return list(_load_images_cached(tuple((str(p.resolve()), d) for p, d in zip(files, digests))))


def _check_inputs(digits, backgrounds, size) -> int:
    if not isinstance(digits, np.ndarray) or digits.dtype != np.uint8 or digits.ndim != 3 or (
            digits.shape[1] != digits.shape[2]):
        raise ValueError(f"digits must be a uint8 numpy array of shape (N, H, H), as load_mnist returns, got "
                         f"{getattr(digits, 'dtype', type(digits).__name__)} {getattr(digits, 'shape', '')}")
    size = check_positive_int("size", size)
    if backgrounds is not None and len(backgrounds) == 0:
        raise ValueError("backgrounds is empty: pass at least one uint8 (H, W, 3) image, e.g. load_bsds500_train()")
    for i, b in enumerate(() if backgrounds is None else backgrounds):
        if not isinstance(b, np.ndarray) or b.dtype != np.uint8 or b.shape[2:] != (3,) or min(b.shape[:2]) < size:
            raise ValueError(f"backgrounds[{i}] must be a uint8 (H, W, 3) RGB array no smaller than the {size}x"
                             f"{size} crop, got {getattr(b, 'dtype', type(b).__name__)} {getattr(b, 'shape', '')}")
    return size


def binarise_digits(digits: np.ndarray, size: int = 28, threshold: int = MNIST_M_THRESHOLD) -> np.ndarray:
    """The digit mask: uint8 (N, H, H) -> uint8 (N, size, size) in {0, 255}: resized bilinearly
    (``align_corners=False``, antialiased when shrinking) if ``size != H``, then pixel > ``threshold`` -> 255."""
    size = _check_inputs(digits, None, size)
    if digits.shape[1] == size:
        return (digits > threshold).astype(np.uint8) * np.uint8(255)
    out = np.empty((len(digits), size, size), dtype=np.uint8)
    for s in range(0, len(digits), 8192):
        x = torch.from_numpy(digits[s:s + 8192].astype(np.float32))[:, None]
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < digits.shape[1])
        out[s:s + 8192] = (y[:, 0].numpy() > threshold).astype(np.uint8) * np.uint8(255)
    return out


def draw_mnist_m_crops(n: int, background_shapes, seed: int, size: int = 28) -> tuple[np.ndarray, ...]:
    """The draws of one build, all up front from ``np.random.default_rng(seed)``: per digit a background index,
    then the crop's top row and left column (uniform). Returns int64 ``(background_index, top, left)``, each (n,)."""
    rng = np.random.default_rng(_check_seed(seed))
    heights, widths = np.array([s[:2] for s in background_shapes], dtype=np.int64).reshape(-1, 2).T
    bg = rng.integers(0, len(heights), size=n, dtype=np.int64)
    top = rng.integers(0, heights[bg] - size + 1, dtype=np.int64)
    return bg, top, rng.integers(0, widths[bg] - size + 1, dtype=np.int64)


def blend_mnist_m(digits: np.ndarray, backgrounds, seed: int, size: int = 28) -> np.ndarray:
    """MNIST-M: digits uint8 (N, H, H), backgrounds uint8 (H_b, W_b, 3) images at least ``size`` square ->
    uint8 (N, size, size, 3) = ``|patch - binarise_digits(digit)|`` per channel, the crops of
    ``draw_mnist_m_crops``: the background where the digit is 0, its inverse where it is 255."""
    size = _check_inputs(digits, backgrounds, size)
    mask = binarise_digits(digits, size)
    bg, top, left = draw_mnist_m_crops(len(mask), [b.shape for b in backgrounds], seed, size)
    out, offs = np.empty((len(mask), size, size, 3), dtype=np.uint8), np.arange(size)
    for b, image in enumerate(backgrounds):  # all the crops of one background at once
        idx = np.flatnonzero(bg == b)
        patch = image[(top[idx, None] + offs)[:, :, None], (left[idx, None] + offs)[:, None, :]].astype(np.int16)
        out[idx] = np.abs(patch - mask[idx, :, :, None].astype(np.int16)).astype(np.uint8)
    return out


def mnist_m_blend_steps(digits, backgrounds, seed: int, size: int = 28, indices=(0, 1, 2, 3)) -> list[dict]:
    """The intermediate images of ``blend_mnist_m`` for the digits ``indices`` (figures), from the same draws:
    a dict per digit of ``index, digit, binarised, background_index, background, top, left, size, patch, blend``."""
    size = _check_inputs(digits, backgrounds, size)
    bg, top, left = draw_mnist_m_crops(len(digits), [b.shape for b in backgrounds], seed, size)
    steps = []
    for i in indices:
        mask = binarise_digits(digits[i:i + 1], size)[0]
        patch = backgrounds[bg[i]][top[i]:top[i] + size, left[i]:left[i] + size]
        steps.append({"index": int(i), "digit": digits[i], "binarised": mask, "background_index": int(bg[i]),
                      "background": backgrounds[bg[i]], "top": int(top[i]), "left": int(left[i]), "size": size,
                      "patch": patch, "blend": np.abs(patch.astype(np.int16) - mask[..., None]).astype(np.uint8)})
    return steps


def mnist_m_seed(seed: int, split: str) -> int:
    """The build seed of one split: ``2 * seed + {train: 0, test: 1}`` (the splits never share draws)."""
    return 2 * _check_seed(seed) + SPLITS.index(_check_split(split))


def _mnist_m_params(split: str, root, seed: int, size: int, n: int | None, download: bool) -> dict:
    files, digests = _train_files(root, download)
    return {"format_version": MNIST_M_FORMAT_VERSION, "dataset": "mnist_m", "split": split, "seed": seed,
            "build_seed": mnist_m_seed(seed, split), "size": size, "n_digits": n, "threshold": MNIST_M_THRESHOLD,
            "digit_resize": "bilinear", "mnist_md5": mnist_md5(split), "backgrounds": "BSDS500/images/train",
            "n_backgrounds": len(files), "backgrounds_sha256": backgrounds_fingerprint(files, digests)}


def build_mnist_m(split: str = "train", root=None, seed: int = 0, size: int = 28, n: int | None = None,
                  download: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """MNIST-M ``split`` from the first ``n`` MNIST digits (None: all) and the BSDS500 train images, uncached:
    ``(images uint8 (N, size, size, 3), labels int64 (N,), params)``, params with ``build_seconds``."""
    seed, size = _check_seed(seed), check_positive_int("size", size)
    n = None if n is None else check_positive_int("n", n)
    params = _mnist_m_params(_check_split(split), root, seed, size, n, download)
    t0 = time.perf_counter()
    digits, labels = load_mnist(split, root, download=download)
    if n is not None and n > len(digits):
        raise ValueError(f"n={n} exceeds the {len(digits)} MNIST {split} digits")
    images = blend_mnist_m(digits[:n], load_bsds500_train(root, download=download), params["build_seed"], size)
    return images, labels[:n], {**params, "n": len(images), "build_seconds": time.perf_counter() - t0}


def mnist_m_cache_path(split: str, seed: int = 0, size: int = 28, cache=None) -> Path:
    return cache_dir(cache) / "mnist_m" / f"{split}_s{seed}_{size}.npz"


def load_mnist_m(split: str = "train", root=None, cache=None, seed: int = 0, size: int = 28,
                 download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-M ``split`` as ``(images uint8 (N, size, size, 3), labels int64 (N,))``: ``build_mnist_m`` of all
    digits, cached at ``mnist_m_cache_path`` with its parameters (among them the sha256 of the backgrounds'
    contents) and a checksum (``common.cached``: rebuilt when they differ or the file is corrupt)."""
    seed, size = _check_seed(seed), check_positive_int("size", size)
    params = _mnist_m_params(_check_split(split), root, seed, size, None, download)
    return cached(mnist_m_cache_path(split, seed, size, cache), params, "MNIST-M",
                  lambda: build_mnist_m(split, root, seed, size, None, download))
