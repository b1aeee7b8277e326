"""The released MNIST-M (Ganin & Lempitsky 2015, sec. 5; Ganin et al. 2016, JMLR, sec. 5.2.2):
the data set the papers' MNIST -> MNIST-M numbers were measured on, as its authors published it.

The official archive ``mnist_m.tar.gz`` unpacks to::

    mnist_m/mnist_m_train/00000000.png ... 00059000.png   (59,001 images, 32x32 RGB)
    mnist_m/mnist_m_test/00000000.png ... 00009000.png    (9,001 images)
    mnist_m/mnist_m_train_labels.txt, mnist_m/mnist_m_test_labels.txt   ("NAME.png LABEL" a line)

Under the data root it is looked for as ``MNIST_M/mnist_m.tar.gz`` (or ``mnist_m.tar.gz``), or as
the extracted folder ``MNIST_M/mnist_m/`` (or ``mnist_m/``). It is read once (about 20 s for the
68,002 PNGs) into the cache, ``cache_dir()/mnist_m_released/{split}.npz``, with the archive's
SHA-256 and a checksum of the arrays; a changed archive or a damaged cache file is read again.

The archive is not downloaded by this module: its authors publish it through their project page
(http://yaroslav.ganin.net/, "MNIST-M"), behind a link that a script cannot follow. Put the file
under the data root as above.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np

from ..utils import atomic_write
from . import common
from .common import DataChecksumError, DataNotFoundError, _check_split, cache_dir, data_root
from .mnist_m import _array_sha256, _read_mnist_m_cache

#: Version of the cache format of the released MNIST-M; bump it when the reading changes.
RELEASED_FORMAT_VERSION = 1
#: Image counts of the official release (train, test).
RELEASED_COUNTS = {"train": 59_001, "test": 9_001}
#: Side of the released images, in pixels.
RELEASED_SIZE = 32
_ARCHIVES = ("MNIST_M/mnist_m.tar.gz", "mnist_m.tar.gz")
_FOLDERS = ("MNIST_M/mnist_m", "mnist_m")
_FIX = ("Fix: download mnist_m.tar.gz from the authors' project page (http://yaroslav.ganin.net/, "
        "\"MNIST-M\") and put it at <data root>/MNIST_M/mnist_m.tar.gz (the data root is DANNLIB_DATA, "
        "or the root= argument), or extract it there as <data root>/MNIST_M/mnist_m/.")
_LINE = re.compile(r"^(\S+\.png)\s+(\d+)\s*$")


def released_mnist_m_source(root=None) -> Path:
    """The archive or extracted folder of the released MNIST-M under the data root; raises
    ``DataNotFoundError`` naming every path searched and the fix."""
    base = data_root(root)
    for rel in _ARCHIVES:
        if (base / rel).is_file():
            return base / rel
    for rel in _FOLDERS:
        if (base / rel).is_dir():
            return base / rel
    raise DataNotFoundError("the released MNIST-M (mnist_m.tar.gz)",
                            [base / p for p in (*_ARCHIVES, *_FOLDERS)], hint=_FIX)


def _source_digest(source: Path) -> str:
    """SHA-256 of the archive; for an extracted folder, of its two label files (a folder's
    PNGs are checked by their count and decoding instead)."""
    if source.is_file():
        return common._file_digest(source, "sha256")
    h = hashlib.sha256()
    for f in [source / f"mnist_m_{s}_labels.txt" for s in ("train", "test")]:
        if f.is_file():
            h.update(bytes.fromhex(common._file_digest(f, "sha256")))
    return h.hexdigest()


def parse_labels(text: str, split: str, where: str) -> list[tuple[str, int]]:
    """``NAME.png LABEL`` lines -> ``[(name, label)]``; a malformed line, a label outside 0-9
    or a repeated name raises ``DataChecksumError`` naming the file and the line."""
    out, seen = [], set()
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        if m is None or not 0 <= int(m.group(2)) <= 9:
            raise DataChecksumError(f"released MNIST-M: {where}, line {i}, is not 'NAME.png LABEL' with a label "
                                    f"0-9 ({line[:60]!r}): the label list is damaged or not MNIST-M's. {_FIX}",
                                    dataset="mnist_m_released", path=where)
        if m.group(1) in seen:
            raise DataChecksumError(f"released MNIST-M: {where} lists {m.group(1)} twice. {_FIX}",
                                    dataset="mnist_m_released", path=where)
        seen.add(m.group(1))
        out.append((m.group(1), int(m.group(2))))
    return out


def _decode_png(data: bytes, name: str, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises many kinds for a damaged file
        raise DataChecksumError(f"released MNIST-M: {name} in {where} cannot be decoded ({type(e).__name__}: "
                                f"{e}): the archive is damaged. {_FIX}", dataset="mnist_m_released",
                                path=where) from None
    if a.shape != (RELEASED_SIZE, RELEASED_SIZE, 3):
        raise DataChecksumError(f"released MNIST-M: {name} in {where} is {a.shape}, not 32x32 RGB. {_FIX}",
                                dataset="mnist_m_released", path=where)
    return a


def _read_split(source: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split from the archive or folder (``limit``: only the first ``limit``
    listed images, for tests)."""
    label_name = f"mnist_m_{split}_labels.txt"
    image_dir = f"mnist_m_{split}"
    if source.is_dir():
        path = source / label_name
        if not path.is_file():
            raise DataNotFoundError(f"the released MNIST-M {split} labels", [path], hint=_FIX)
        pairs = parse_labels(path.read_text(), split, str(path))[:limit]
        blobs = {}
        for name, _ in pairs:
            f = source / image_dir / name
            if not f.is_file():
                raise DataChecksumError(f"released MNIST-M: {path} lists {name}, but {f} is missing. {_FIX}",
                                        dataset="mnist_m_released", path=f)
            blobs[name] = f.read_bytes()
    else:
        labels_text, blobs = None, {}
        try:
            with tarfile.open(source, "r:gz") as tar:
                for member in tar:
                    parts = member.name.split("/")
                    if not member.isfile() or len(parts) < 2:
                        continue
                    if parts[-1] == label_name:
                        labels_text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                    elif parts[-2] == image_dir and parts[-1].endswith(".png"):
                        blobs[parts[-1]] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise DataChecksumError(f"released MNIST-M: {source} cannot be read ({type(e).__name__}: {e}): the "
                                    f"archive is truncated or not a gzip tar. {_FIX}", dataset="mnist_m_released",
                                    path=source) from None
        if labels_text is None:
            raise DataChecksumError(f"released MNIST-M: {source} holds no {label_name}: not the official "
                                    f"layout. {_FIX}", dataset="mnist_m_released", path=source)
        pairs = parse_labels(labels_text, split, f"{source}:{label_name}")[:limit]
        missing = [n for n, _ in pairs if n not in blobs]
        if missing:
            raise DataChecksumError(f"released MNIST-M: {source} lists {len(missing)} {split} images it does not "
                                    f"hold (first: {missing[0]}): the archive is truncated. {_FIX}",
                                    dataset="mnist_m_released", path=source)
    if limit is None and len(pairs) != RELEASED_COUNTS[split]:
        raise DataChecksumError(f"released MNIST-M: {split} lists {len(pairs)} images, the release has "
                                f"{RELEASED_COUNTS[split]}: the label list is not the official one. {_FIX}",
                                dataset="mnist_m_released", path=source)
    images = np.stack([_decode_png(blobs[n], n, str(source)) for n, _ in pairs]) if pairs else \
        np.zeros((0, RELEASED_SIZE, RELEASED_SIZE, 3), np.uint8)
    labels = np.array([y for _, y in pairs], dtype=np.int64)
    return images, labels


def released_cache_path(split: str, cache=None) -> Path:
    return cache_dir(cache) / "mnist_m_released" / f"{split}.npz"


def load_mnist_m_released(split: str = "train", root=None, cache=None, *, limit: int | None = None,
                          download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The released MNIST-M ``split`` as ``(images uint8 (N, 32, 32, 3), labels int64 (N,))``,
    N = 59,001 (train) or 9,001 (test), in the release's order.

    Read from the archive (or extracted folder) under the data root once, then from the cache
    (checked against the archive's SHA-256 and the arrays' checksum). If the data root has a
    ``SHA256SUMS`` listing the archive, the archive is checked against it first. ``limit``:
    decode only the first ``limit`` images, uncached (tests). ``download=True`` is refused with
    the manual step (see the module docstring)."""
    _check_split(split)
    if download:
        try:
            released_mnist_m_source(root)
        except DataNotFoundError:
            raise DataNotFoundError("the released MNIST-M (mnist_m.tar.gz)", [data_root(root) / _ARCHIVES[0]],
                                    hint="It cannot be downloaded by a script. " + _FIX) from None
    source = released_mnist_m_source(root)
    digest = _source_digest(source)
    if source.is_file():
        common.verify_sha256(root, [source], [digest], "the released MNIST-M", _FIX)
    if limit is not None:
        return _read_split(source, split, limit)
    params = {"format_version": RELEASED_FORMAT_VERSION, "split": split, "source_sha256": digest}
    path = released_cache_path(split, cache)
    cached = _read_mnist_m_cache(path, params, "released MNIST-M", "reading the archive again")
    if cached is not None:
        return cached
    images, labels = _read_split(source, split)
    if common._writable(path.parent):
        with atomic_write(path, "wb") as fh:
            meta = {"params": params, "sha256": _array_sha256(images, labels)}
            np.savez(fh, images=images, labels=labels, meta=np.array(json.dumps(meta, sort_keys=True)))
    else:
        warnings.warn(f"released MNIST-M read into memory and not cached: "
                      f"{common.cache_not_writable_message(path.parent)}", stacklevel=2)
    return images, labels
