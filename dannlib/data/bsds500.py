"""BSDS500 (Arbelaez et al. 2011, the Berkeley Segmentation Data Set 500): the *train*
images, the backgrounds of MNIST-M (Ganin & Lempitsky 2015, sec. 5). Downloading the archive,
listing the images, checking their contents (sha256, against the data root's ``SHA256SUMS``
when it lists them) and decoding them.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from .common import DataChecksumError, DataNotFoundError, _file_digest, _readonly, data_root, verify_sha256

#: The BSDS500 archive (about 70 MB); its inner layout is ``BSR/BSDS500/data/images/{train,val,test}/*.jpg``.
#: No checksum is pinned here (none could be confirmed offline): pass ``md5=`` to verify.
BSDS500_URL = "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz"
BSDS500_MD5: str | None = None


def bsds500_train_dir(root=None) -> Path:
    return data_root(root) / "BSDS500" / "images" / "train"


def bsds500_train_files(root=None) -> list[Path]:
    """The BSDS500 train images ``root/BSDS500/images/train/*.jpg``, sorted by file name."""
    folder = bsds500_train_dir(root)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.suffix.lower() == ".jpg" and p.is_file()), key=lambda p: p.name)


def _bsds500_fix(path: Path) -> str:
    return (f"Fix: copy a good {path.name} into {path.parent} (or delete that folder and load with "
            f"download=True, which fetches the whole archive again), or point DANNLIB_DATA at a data root "
            f"holding a good copy of BSDS500/images/train.")


def bsds500_train_digests(root=None, files: Sequence[Path] | None = None) -> list[str]:
    """The sha256 of each file of ``files`` (default: ``bsds500_train_files(root)``), in
    order, after checking them against the data root's ``SHA256SUMS`` where it lists them:
    a mismatch raises ``DataChecksumError`` naming the file. Reads every byte (about 15 MB
    for the 200 real images: a few tens of milliseconds)."""
    files = bsds500_train_files(root) if files is None else list(files)
    digests = [_file_digest(p, "sha256") for p in files]
    if files:
        verify_sha256(root, files, digests, "BSDS500", _bsds500_fix(Path(files[0])))
    return digests


def backgrounds_fingerprint(files: Sequence[Path], digests: Sequence[str] | None = None) -> str:
    """sha256 of the sorted ``name:sha256(contents)`` lines of the background files: changes
    when any image's bytes change, even to others of the same size. ``digests``: the files'
    sha256 in the order of ``files``, if already computed."""
    files = list(files)
    digests = [_file_digest(p, "sha256") for p in files] if digests is None else list(digests)
    if len(digests) != len(files):
        raise ValueError(f"{len(files)} files but {len(digests)} digests: pass one digest per file")
    text = "\n".join(f"{p.name}:{d}" for p, d in sorted(zip(files, digests), key=lambda t: t[0].name))
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
                                    f"the download is corrupt or the URL serves another file",
                                    dataset="BSDS500")
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


def _decode_jpg(path: Path) -> np.ndarray:
    """One image as uint8 (H, W, 3) RGB; an empty, truncated or undecodable file raises
    ``DataChecksumError`` naming it (never PIL's bare "image file is truncated")."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataChecksumError(
            f"BSDS500: {path} is damaged, truncated or not an image ({type(e).__name__}: {e}; "
            f"{path.stat().st_size} bytes). {_bsds500_fix(path)}", dataset="BSDS500", path=path) from e


@functools.lru_cache(maxsize=4)
def _load_images_cached(files: tuple[tuple[str, str], ...]) -> tuple[np.ndarray, ...]:
    return tuple(_readonly(_decode_jpg(Path(path))) for path, _ in files)


def load_bsds500_train(root=None, download: bool = False, url: str = BSDS500_URL,
                       md5: str | None = BSDS500_MD5) -> list[np.ndarray]:
    """The BSDS500 *train* images (200 for the real set) as uint8 ``(H, W, 3)`` arrays,
    sorted by file name, read with PIL. Only the train split is ever used for MNIST-M.
    The files are checked by ``bsds500_train_digests`` and the decoded images kept in memory
    keyed on their paths and contents; returns read-only arrays. A damaged file raises
    ``DataChecksumError`` naming it."""
    files = bsds500_train_files(root)
    if not files:
        if not download:
            raise DataNotFoundError("BSDS500 (train images, *.jpg)", [bsds500_train_dir(root)])
        download_bsds500(root, url=url, md5=md5)
        files = bsds500_train_files(root)
    digests = bsds500_train_digests(root, files)
    key = tuple((str(p.resolve()), d) for p, d in zip(files, digests))
    return list(_load_images_cached(key))
