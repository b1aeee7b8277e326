"""What every data module shares: where the data root and the cache are, the two data
errors, checksums (MD5 lists, a ``SHA256SUMS`` file at the data root) and argument checks.

Imports nothing else from ``dannlib.data``: the other modules build on this one.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import operator
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np

from ..utils import PROJECT_ROOT, check_choice

SPLITS = ("train", "test")

#: The errno values of a write refused by the folder (read-only file system, no permission).
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)

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
        self.hint = hint

    def __reduce__(self):
        # Rebuilt from its own arguments, so that it crosses a process boundary (a sweep's
        # worker pool, Dask) intact: the default would call __init__ with the message alone.
        return type(self), (self.dataset, self.searched, self.hint)


class DataChecksumError(ValueError):
    """A data file exists but is damaged or not the expected file: its checksum differs from
    the expected one, or it cannot be decoded (truncated, empty, random bytes). The message
    names the file, the data set and the fix; ``path`` and ``dataset`` hold the first two
    when the raiser knows them."""

    def __init__(self, message: str, *, dataset: str | None = None, path: os.PathLike | str | None = None):
        super().__init__(message)
        self.dataset = dataset
        self.path = None if path is None else str(path)


class CacheNotWritableError(PermissionError):
    """The cache folder (``DANNLIB_CACHE``) refuses writes; raised by ``check_cache_writable``."""


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


def _writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (created if missing): tries it, with a
    temporary file removed at once. A permission test by ``os.access`` would answer yes to
    root on a read-only mount's neighbours; an actual write never lies."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return True


def cache_not_writable_message(folder: Path) -> str:
    """The one explanation of a cache folder that refuses writes: names it, the variable
    ``DANNLIB_CACHE`` and the fix."""
    return (f"the cache folder {folder} is not writable (read-only file system or no permission). "
            f"Fix: set DANNLIB_CACHE=/a/writable/folder (or pass cache=/a/writable/folder), "
            f"or make {folder} writable.")


def check_cache_writable(cache: str | os.PathLike | None = None) -> Path:
    """``cache_dir(cache)`` after checking that files can be written there (the folder is
    created if missing); raises ``CacheNotWritableError`` naming the folder, the variable
    ``DANNLIB_CACHE`` and the fix otherwise. For callers that want to fail early (the loaders
    themselves build in memory and warn instead)."""
    folder = cache_dir(cache)
    if not _writable(folder):
        raise CacheNotWritableError(cache_not_writable_message(folder))
    return folder


# --------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------

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
            f"download=True.", dataset=dataset, path=path)


def read_sha256sums(root: str | os.PathLike | None = None) -> dict[str, str]:
    """The ``SHA256SUMS`` file at the data root (``sha256sum`` output: ``<hex>  <path>`` or
    ``<hex> *<path>``, paths relative to the root) as ``{posix path: hex}``; empty when
    there is no such file. A line that is not of that form raises ``DataChecksumError``."""
    path = data_root(root) / "SHA256SUMS"
    if not path.is_file():
        return {}
    sums = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        name = name[1:] if name[:1] in (" ", "*") else name
        if len(digest) != 64 or not name or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise DataChecksumError(
                f"{path}, line {i}, is not '<sha256 hex>  <relative path>' ({line!r}). Fix: regenerate it "
                f"with `sha256sum <files> > SHA256SUMS` in the data root, or delete it.", path=path)
        sums[PurePosixPath(name).as_posix()] = digest.lower()
    return sums


def verify_sha256(root: str | os.PathLike | None, files: Iterable[Path], digests: Iterable[str], dataset: str,
                  fix: str) -> None:
    """Check the sha256 ``digests`` of ``files`` against the data root's ``SHA256SUMS``
    (files it does not list pass); the first mismatch raises ``DataChecksumError`` naming
    the file, the data set and ``fix``."""
    sums = read_sha256sums(root)
    if not sums:
        return
    base = data_root(root)
    for path, digest in zip(files, digests):
        try:
            rel = Path(path).relative_to(base).as_posix()
        except ValueError:
            continue
        expected = sums.get(rel)
        if expected is not None and expected != digest:
            raise DataChecksumError(
                f"{dataset}: {path} has SHA-256 {digest}, but {base / 'SHA256SUMS'} lists {expected}: the file "
                f"was changed, truncated or replaced. {fix}", dataset=dataset, path=path)


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------

def _check_split(split: str) -> str:
    check_choice("split", split, SPLITS)
    return split


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


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a
