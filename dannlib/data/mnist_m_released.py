"""The released MNIST-M (Ganin & Lempitsky 2015, sec. 5; Ganin et al. 2016, JMLR, sec. 5.2.2), the data the
papers measured on: ``mnist_m.tar.gz`` holds ``mnist_m/mnist_m_{train,test}/NNNNNNNN.png`` (59,001 / 9,001
images, 32x32 RGB) and ``mnist_m/mnist_m_{train,test}_labels.txt`` ("NAME.png LABEL" a line). Looked for under
the data root as ``MNIST_M/mnist_m.tar.gz`` or ``mnist_m.tar.gz``; read once into the cache. A script cannot
download it (its page links it behind a form)."""
from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np

from ..utils import file_digest
from .common import (DataChecksumError, DataNotFoundError, _check_split, cache_dir, cached, data_root,
                     verify_sha256)

RELEASED_FORMAT_VERSION = 1  # of the cache: bump it when the reading changes
RELEASED_COUNTS = {"train": 59_001, "test": 9_001}
_PLACES = ("MNIST_M/mnist_m.tar.gz", "mnist_m.tar.gz")
_FIX = ("Fix: download mnist_m.tar.gz from the authors' project page (http://yaroslav.ganin.net/, "
        "\"MNIST-M\") and put it at <data root>/MNIST_M/mnist_m.tar.gz (the data root is DANNLIB_DATA, "
        "or the root= argument).")
_LINE = re.compile(r"^(\S+\.png)\s+(\d+)\s*$")


def released_mnist_m_source(root=None, hint: str = _FIX) -> Path:
    """The archive under the data root, else ``DataNotFoundError``."""
    base = data_root(root)
    if found := next((base / rel for rel in _PLACES if (base / rel).is_file()), None):
        return found
    folders = [base / p for p in ("MNIST_M/mnist_m", "mnist_m") if (base / p).is_dir()]
    if folders:  # an extracted copy: read from the archive only (one file to checksum)
        hint = f"{folders[0]} is an extracted folder, which is not read: keep the archive itself. {hint}"
    raise DataNotFoundError("the released MNIST-M (mnist_m.tar.gz)", [base / p for p in _PLACES], hint=hint)


def _error(message: str, where) -> DataChecksumError:
    return DataChecksumError(f"released MNIST-M: {message}. {_FIX}", dataset="mnist_m_released", path=where)


def _decode_png(data: bytes, name: str, where: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises many kinds for a damaged file
        raise _error(f"{name} in {where} cannot be decoded ({type(e).__name__}: {e})", where) from None
    if a.shape != (32, 32, 3):
        raise _error(f"{name} in {where} is {a.shape}, not 32x32 RGB", where)
    return a


def _read_split(source: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split from the archive (``limit``: only its first ``limit`` images)."""
    label_name, image_dir, labels_text, blobs = f"mnist_m_{split}_labels.txt", f"mnist_m_{split}", None, {}
    try:
        with tarfile.open(source, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and len(parts) > 1 and parts[-1] == label_name:
                    labels_text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                elif member.isfile() and len(parts) > 1 and parts[-2] == image_dir and parts[-1].endswith(".png"):
                    blobs[parts[-1]] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise _error(f"{source} cannot be read ({type(e).__name__}: {e}): the archive is truncated or not a gzip "
                     f"tar", source) from None
    if labels_text is None:
        raise _error(f"{source} holds no {label_name}: not the official layout", source)
    labels, where = {}, f"{source}/{label_name}"
    for i, line in enumerate(labels_text.splitlines(), 1):
        if not line.strip():
            continue
        if (m := _LINE.match(line.strip())) is None or not 0 <= int(m[2]) <= 9 or m[1] in labels:
            what = f"lists {m[1]} twice" if m and m[1] in labels else "is not 'NAME.png LABEL' with a label 0-9"
            raise _error(f"{where}, line {i}, {what} ({line[:60]!r}): the label list is damaged or not MNIST-M's",
                         source)
        labels[m[1]] = int(m[2])
    names = list(labels)[:limit]
    if missing := [n for n in names if n not in blobs]:
        raise _error(f"{source} lists {len(missing)} {split} images it does not hold (first: {missing[0]}): it is "
                     f"truncated or incomplete", source)
    if limit is None and len(names) != RELEASED_COUNTS[split]:
        raise _error(f"{split} lists {len(names)} images, the release has {RELEASED_COUNTS[split]}: the label list "
                     f"is not the official one", source)
    images = np.zeros((len(names), 32, 32, 3), np.uint8)
    for k, name in enumerate(names):
        images[k] = _decode_png(blobs[name], name, source)
    return images, np.array([labels[n] for n in names], np.int64)


def released_cache_path(split: str, cache=None) -> Path:
    return cache_dir(cache) / "mnist_m_released" / f"{split}.npz"


def load_mnist_m_released(split: str = "train", root=None, cache=None, *, limit: int | None = None,
                          download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The released MNIST-M ``split`` as ``(images uint8 (N, 32, 32, 3), labels int64 (N,))`` in the release's
    order: read from the archive (checked against ``SHA256SUMS`` where it lists it) once, then from the cache
    (keyed on its SHA-256). ``limit``: the first ``limit`` images, uncached. ``download=True`` is refused."""
    _check_split(split)
    source = released_mnist_m_source(root, ("It cannot be downloaded by a script. " if download else "") + _FIX)
    verify_sha256(root, [source], [digest := file_digest(source, "sha256")], "the released MNIST-M", _FIX)
    if limit is not None:
        return _read_split(source, split, limit)
    params = {"format_version": RELEASED_FORMAT_VERSION, "split": split, "source_sha256": digest}
    return cached(released_cache_path(split, cache), params, "released MNIST-M",
                  lambda: (*_read_split(source, split), params))
