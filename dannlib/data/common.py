"""What the data modules share: the data root and cache folders, the data errors, checksums (a ``SHA256SUMS``
file at the data root), the on-disk cache of derived arrays, argument checks."""
from __future__ import annotations

import errno
import hashlib
import json
import operator
import os
import tempfile
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from ..utils import PROJECT_ROOT, atomic_write, check_choice

SPLITS = ("train", "test")
_FIX = ("Fix: point the data root at a copy of the data (set DANNLIB_DATA=/path/to/data, or pass "
        "root=/path/to/data, the notebooks' data_root parameter), or allow the download (download=True).")


class DataNotFoundError(FileNotFoundError):
    """A data set is missing: the message names it, every path searched and the fixes."""

    def __init__(self, dataset: str, searched, hint: str = ""):
        paths = "\n".join(f"  - {p}" for p in searched)
        super().__init__(f"{dataset} not found. Searched:\n{paths}\n{_FIX}" + (f"\n{hint}" if hint else ""))
        self.dataset, self.searched, self.hint = dataset, [str(p) for p in searched], hint

    def __reduce__(self):  # rebuilt from its arguments, so that it crosses a process boundary intact
        return type(self), (self.dataset, self.searched, self.hint)


class DataChecksumError(ValueError):
    """A data file is damaged or not the expected one; the message names the file, the data set and the fix."""

    def __init__(self, message: str, *, dataset: str | None = None, path=None):
        super().__init__(message)
        self.dataset, self.path = dataset, None if path is None else str(path)


class CacheNotWritableError(PermissionError):
    """The cache folder (``DANNLIB_CACHE``) refuses writes; raised by ``check_cache_writable``."""


def data_root(root=None) -> Path:
    """The data root: ``root`` if given, else ``$DANNLIB_DATA`` (blank counts as unset, as for the store and the
    cache), else ``PROJECT_ROOT/data``."""
    env = os.environ.get("DANNLIB_DATA", "").strip()
    return Path(root if root is not None else env or PROJECT_ROOT / "data").expanduser()


def cache_dir(cache=None) -> Path:
    """Where derived arrays go: ``cache`` if given, else ``$DANNLIB_CACHE`` (absolute: a notebook kernel's working
    folder is the notebooks folder), else ``PROJECT_ROOT/data/cache``."""
    env = os.environ.get("DANNLIB_CACHE", "").strip()
    return Path(cache if cache is not None else env or PROJECT_ROOT / "data" / "cache").expanduser().absolute()


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (created if missing), found by trying it."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _not_writable(folder: Path) -> str:
    return (f"the cache folder {folder} is not writable (read-only file system or no permission). Fix: set "
            f"DANNLIB_CACHE=/a/writable/folder (or pass cache=/a/writable/folder), or make {folder} writable.")


def check_cache_writable(cache=None) -> Path:
    """``cache_dir(cache)``, created if missing; ``CacheNotWritableError`` if it refuses writes."""
    if not _writable(folder := cache_dir(cache)):
        raise CacheNotWritableError(_not_writable(folder))
    return folder


def _array_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images).reshape(-1).view(np.uint8))
    h.update(np.ascontiguousarray(labels).reshape(-1).view(np.uint8))
    return h.hexdigest()


def cached(path: Path, params: dict, what: str, build) -> tuple[np.ndarray, np.ndarray]:
    """The arrays cached at ``path`` if written with ``params`` (``n``, ``build_seconds`` aside) and intact; else
    ``build() -> (images, labels, params to record)`` (a warning says why), written atomically where the folder
    takes writes (else one warning: ``_writable`` says no, or EROFS, EACCES, EPERM; other errors propagate)."""
    if path.is_file():
        try:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"][()]))
                stored = {k: v for k, v in meta.get("params", {}).items() if k not in ("build_seconds", "n")}
                diff = sorted(k for k in set(stored) | set(params) if stored.get(k) != params.get(k))
                images, labels = (z["images"], z["labels"]) if not diff else (None, None)
            why = f"was built with other parameters ({', '.join(diff)})" if diff else (
                "fails its checksum" if _array_sha256(images, labels) != meta["sha256"] else None)
        except Exception as e:  # any unreadable cache is rebuilt, never a crash
            why = f"is unreadable ({type(e).__name__}: {e})"
        if why is None:
            return images, labels
        warnings.warn(f"{what} cache {path} {why}; rebuilding it", stacklevel=3)
    images, labels, record = build()
    if _writable(path.parent):
        meta = json.dumps({"params": record, "sha256": _array_sha256(images, labels)}, sort_keys=True)
        try:
            with atomic_write(path, "wb") as fh:
                np.savez(fh, images=images, labels=labels, meta=np.array(meta))
            return images, labels
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
    warnings.warn(f"{what} kept in memory, not cached: {_not_writable(path.parent)}", stacklevel=3)
    return images, labels


def read_sha256sums(root=None) -> dict[str, str]:
    """The data root's ``SHA256SUMS`` (``sha256sum`` output) as ``{posix path: hex}``; empty without one."""
    path, sums = data_root(root) / "SHA256SUMS", {}
    for i, line in enumerate(path.read_text().splitlines() if path.is_file() else [], 1):
        digest, _, name = line.partition(" ")
        name = name[1:] if name[:1] in (" ", "*") else name
        if not line.strip() or line.startswith("#"):
            continue
        if len(digest) != 64 or not name or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise DataChecksumError(f"{path}, line {i}, is not '<sha256 hex>  <relative path>' ({line!r}). Fix: "
                                    f"regenerate it with `sha256sum <files> > SHA256SUMS` in the data root, or "
                                    f"delete it.", path=path)
        sums[PurePosixPath(name).as_posix()] = digest.lower()
    return sums


def verify_sha256(root, files, digests, dataset: str, fix: str) -> None:
    """Check the sha256 ``digests`` of ``files`` against the data root's ``SHA256SUMS`` (files it does not
    list pass); a mismatch raises ``DataChecksumError`` naming the file and ``fix``."""
    sums, base = read_sha256sums(root), data_root(root)
    for path, digest in zip(files, digests) if sums else ():
        rel = Path(path).relative_to(base).as_posix() if Path(path).is_relative_to(base) else None
        if sums.get(rel, digest) != digest:
            raise DataChecksumError(f"{dataset}: {path} has SHA-256 {digest}, but {base / 'SHA256SUMS'} lists "
                                    f"{sums[rel]}: the file was changed, truncated or replaced. {fix}",
                                    dataset=dataset, path=path)


def _check_split(split: str) -> str:
    return check_choice("split", split, SPLITS)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not hasattr(seed, "__index__") or operator.index(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return operator.index(seed)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a
