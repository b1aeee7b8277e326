"""MNIST (LeCun et al. 1998) and USPS (Hull 1994) as uint8 images and int64 labels, read from the data root
after checking the files (MNIST, USPS bz2: torchvision's MD5 lists; usps.h5: ``SHA256SUMS`` where it lists it)."""
from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np

from ..utils import file_digest
from .common import (SPLITS, DataChecksumError, DataNotFoundError, _check_split, _readonly, data_root,
                     verify_sha256)

_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_USPS_BZ2 = {"train": "usps.bz2", "test": "usps.t.bz2"}


def _mnist_md5s() -> dict[str, str]:
    import torchvision

    return dict(torchvision.datasets.MNIST.resources)


def _usps_md5s() -> dict[str, str]:
    import torchvision

    return {name: md5 for _, name, md5 in torchvision.datasets.USPS.split_list.values()}


def mnist_md5(split: str) -> list[str]:
    """The MD5s of the images and labels archives of an MNIST split, from torchvision's list."""
    return [_mnist_md5s()[name] for name in _MNIST_FILES[split]]


def _check_md5(path: Path, expected: str, dataset: str) -> None:
    if (actual := file_digest(path, "md5")) != expected:
        raise DataChecksumError(
            f"{dataset}: {path} has MD5 {actual}, expected {expected} (torchvision's list): the file is truncated "
            f"or not the original. Delete it and copy it again, or delete it and load with download=True.",
            dataset=dataset, path=path)


@functools.lru_cache(maxsize=8)
def _read_idx(path: Path, dtype) -> np.ndarray:
    """An MNIST IDX archive, MD5-checked, read-only (kept): header 0, 0, dtype, ndim, ndim big-endian uint32 sizes."""
    _check_md5(path, _mnist_md5s()[path.name], "MNIST")
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    shape = np.frombuffer(raw, ">u4", raw[3], 4).astype(int)
    return _readonly(np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(shape).astype(dtype))


def load_mnist(split: str = "train", root=None, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` (60,000 / 10,000) as ``(images uint8 (N, 28, 28), labels int64 (N,))`` from
    ``root/MNIST/raw``, MD5-checked; missing files are downloaded by torchvision if ``download``."""
    raw = data_root(root) / "MNIST" / "raw"
    if not all((raw / name).is_file() for name in _MNIST_FILES[_check_split(split)]):
        if not download:
            raise DataNotFoundError("MNIST", [raw / name for name in _MNIST_FILES[split]])
        import torchvision

        torchvision.datasets.MNIST(str(data_root(root)), train=(split == "train"), download=True)
    images, labels = (_read_idx(raw.resolve() / name, t) for name, t in zip(_MNIST_FILES[split], (np.uint8, np.int64)))
    return images.copy(), labels.copy()


def _usps_h5_fix(path: Path) -> str:
    return (f"Fix: copy a good usps.h5 over {path} (re-download it from its source), or point DANNLIB_DATA at a "
            f"data root holding a good copy. (dannlib cannot download the h5 version: without it, "
            f"load_usps(download=True) uses torchvision's bz2 files instead.)")


@functools.lru_cache(maxsize=8)
def _load_usps_cached(split: str, path: Path, root: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix == ".h5":
        import h5py

        verify_sha256(root, [path], [file_digest(path, "sha256")], "USPS", _usps_h5_fix(path))
        try:
            with h5py.File(path, "r") as f:
                x01 = np.asarray(f[f"{split}/data"], dtype=np.float64).reshape(-1, 16, 16)
                y = np.asarray(f[f"{split}/target"]).astype(np.int64)
            if len(x01) != len(y) or not np.isin(y, range(10)).all():
                raise ValueError(f"{len(x01)} images of 16x16 but {len(y)} labels, or labels outside 0-9")
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise DataChecksumError(f"USPS: {path} is damaged or not the USPS h5 file ({type(e).__name__}: {e}); "
                                    f"it should hold {split}/data (N, 256) and {split}/target (N,). "
                                    f"{_usps_h5_fix(path)}", dataset="USPS", path=path) from e
    else:  # torchvision's LIBSVM text (MD5-checked): labels 1-10, values in [-1, 1]
        from sklearn.datasets import load_svmlight_file

        _check_md5(path, _usps_md5s()[path.name], "USPS")
        x, y = load_svmlight_file(str(path), n_features=256, zero_based=False)
        x01, y = (x.toarray().reshape(-1, 16, 16) + 1.0) / 2.0, y.astype(np.int64) - 1
    return _readonly(np.clip(np.round(x01 * 255.0), 0, 255).astype(np.uint8)), _readonly(y)


def load_usps(split: str = "train", root=None, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """USPS ``split`` (7,291 / 2,007) as ``(images uint8 (N, 16, 16), labels int64)``: from
    ``root/USPS_h5/usps.h5`` when it exists (``round(255 x)``), else torchvision's ``root/USPS/usps{,.t}.bz2``
    (``round(255 (x + 1) / 2)``, labels 1-10 -> 0-9; downloaded if ``download``); one format for both splits."""
    root = data_root(root)
    h5, bz = root / "USPS_h5" / "usps.h5", root / "USPS" / _USPS_BZ2[_check_split(split)]
    if not h5.is_file() and not bz.is_file():
        if not download:
            raise DataNotFoundError("USPS", [h5, bz])
        import torchvision

        for s in SPLITS:  # both splits, so that train and test come from one format
            torchvision.datasets.USPS(str(root / "USPS"), train=(s == "train"), download=True)
    # h5 as found under root (not resolved), so that SHA256SUMS's names match
    images, labels = _load_usps_cached(split, h5.absolute() if h5.is_file() else bz.resolve(), root.absolute())
    return images.copy(), labels.copy()
