"""The two raw digit data sets: MNIST (LeCun et al. 1998) and USPS (Hull 1994), as uint8
images and int64 labels, read from the data root after checking the files.

MNIST: the four IDX archives of ``root/MNIST/raw``, checked against torchvision's MD5 list.
USPS: ``root/USPS_h5/usps.h5`` (checked against the data root's ``SHA256SUMS`` when that
lists it) or torchvision's ``root/USPS/usps{,.t}.bz2`` (checked against torchvision's MD5
list); one format for both splits, never mixed.
"""
from __future__ import annotations

import bz2
import functools
import gzip
from pathlib import Path

import numpy as np

from .common import (SPLITS, DataChecksumError, DataNotFoundError, _check_md5, _check_split, _file_digest,
                     _readonly, data_root, verify_sha256)

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_USPS_BZ2 = {"train": "usps.bz2", "test": "usps.t.bz2"}


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


def _usps_h5_fix(path: Path) -> str:
    return (f"Fix: copy a good usps.h5 over {path} (re-download it from its source), or point "
            f"DANNLIB_DATA at a data root holding a good copy. (dannlib cannot download the h5 "
            f"version: without it, load_usps(download=True) uses torchvision's bz2 files instead.)")


def _read_usps_h5(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``split/data`` (N, 256) floats in [0, 1] and ``split/target`` of an h5 file; a file
    that h5py cannot read (random bytes, truncated, other layout) raises ``DataChecksumError``
    naming it, never h5py's bare ``OSError``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            x = np.asarray(f[f"{split}/data"], dtype=np.float64)
            y = np.asarray(f[f"{split}/target"]).astype(np.int64)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise DataChecksumError(
            f"USPS: {path} is damaged or not the USPS h5 file ({type(e).__name__}: {e}); it should hold "
            f"train/data, train/target, test/data, test/target. {_usps_h5_fix(path)}",
            dataset="USPS", path=path) from e
    if x.ndim != 2 or x.shape[1] != 256 or len(x) != len(y):
        raise DataChecksumError(
            f"USPS: {path} holds {split}/data of shape {x.shape} and {len(y)} targets, expected (N, 256) "
            f"and N targets. {_usps_h5_fix(path)}", dataset="USPS", path=path)
    return x, y


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
def _load_usps_cached(split: str, source: str, path: str, root: str) -> tuple[np.ndarray, np.ndarray]:
    if source == "h5":
        verify_sha256(root, [Path(path)], [_file_digest(Path(path), "sha256")], "USPS", _usps_h5_fix(Path(path)))
        x01, y = _read_usps_h5(Path(path), split)
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
    h5 file, torchvision downloads both bz2 splits. A damaged file raises
    ``DataChecksumError`` naming it."""
    _check_split(split)
    root = data_root(root)
    h5 = root / "USPS_h5" / "usps.h5"
    if h5.is_file():
        # the path as found under root (not resolved), so that SHA256SUMS's relative names match
        images, labels = _load_usps_cached(split, "h5", str(h5.absolute()), str(root.absolute()))
        return images.copy(), labels.copy()
    usps_dir = root / "USPS"
    bz = usps_dir / _USPS_BZ2[split]
    if not bz.is_file():
        if not download:
            raise DataNotFoundError("USPS", [h5, bz])
        import torchvision

        for s in SPLITS:  # both splits, so that train and test come from one format
            torchvision.datasets.USPS(str(usps_dir), train=(s == "train"), download=True)
    images, labels = _load_usps_cached(split, "bz2", str(bz.resolve()), str(root.absolute()))
    return images.copy(), labels.copy()
