"""Fingerprints of the data a run is trained on, per domain: a sha256 over the input files its loader reads. The
run store records it with a run and compares it on reuse: changed data means recomputation, with the same key."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from ..utils import atomic_write, file_digest
from .common import SPLITS, DataChecksumError, DataNotFoundError, data_root, read_sha256sums
from .digits import _MNIST_FILES, _USPS_BZ2
from .mnist_m import bsds500_train_files
from .mnist_m_released import released_mnist_m_source

FINGERPRINT_FORMAT = 1  # bump when what a fingerprint covers changes (older ones are then not compared)
DIGIT_DOMAINS = ("mnist", "usps", "mnist_m", "mnist_m_released")


def _files(domain: str, base: Path) -> list[Path]:
    if domain == "mnist":
        return [base / "MNIST" / "raw" / name for s in SPLITS for name in _MNIST_FILES[s]]
    if domain == "usps":
        h5 = base / "USPS_h5" / "usps.h5"
        return [h5] if h5.is_file() else [base / "USPS" / _USPS_BZ2[s] for s in SPLITS]
    if domain == "mnist_m":
        return _files("mnist", base) + bsds500_train_files(base)
    if domain == "mnist_m_released":
        return [released_mnist_m_source(base)]
    raise ValueError(f"domain must be one of {', '.join(DIGIT_DOMAINS)}, got {domain!r}")


@functools.lru_cache(maxsize=None)
def _digests(domain: str, base: Path) -> tuple[tuple[Path, str], ...]:
    files = _files(domain, base)
    if (missing := [p for p in files if not p.is_file()]) or not files:
        raise DataNotFoundError(domain, missing or [base])
    return tuple((p, file_digest(p, "sha256")) for p in files)


clear_cache = _digests.cache_clear  # forget the digests computed in this process (after the data changed)


def data_fingerprint(data: dict, root=None, verified: bool = False) -> dict | None:
    """``{"format": .., <domain>: <hex>, ...}`` for the source and target of a run's data spec
    (``dannlib.store.digits_data``), each the sha256 of the sorted ``relative path:sha256`` lines of the files the
    domain is loaded from; None for a toy (no files). ``verified``: first check that the data root's
    ``SHA256SUMS`` lists every file with its digest (DataChecksumError otherwise)."""
    if data.get("kind") != "digits":
        return None
    base, fingerprint = data_root(root).absolute(), {"format": FINGERPRINT_FORMAT}
    sums = read_sha256sums(base) if verified else {}
    for domain in dict.fromkeys((data["source"], data["target"])):
        digests = _digests(domain, base)
        lines = sorted(f"{p.relative_to(base).as_posix()}:{d}" for p, d in digests)
        for path, digest in digests if verified else ():
            if sums.get(path.relative_to(base).as_posix()) != digest:
                raise DataChecksumError(f"{domain}: {path} is not listed with SHA-256 {digest} in "
                                        f"{base / 'SHA256SUMS'}: its fingerprint cannot be vouched for",
                                        dataset=domain, path=path)
        fingerprint[domain] = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return fingerprint


def current_fingerprint(data: dict, root=None) -> dict | None:
    """:func:`data_fingerprint`, or None where the data are missing or unreadable."""
    try:
        return data_fingerprint(data, root)
    except (OSError, ValueError):
        return None


def fingerprint_mismatch(recorded: dict | None, current: dict | None) -> str | None:
    """"domain: recorded <hex>, now <hex>" for the first domain whose fingerprint changed, else None."""
    if not recorded or not current or recorded.get("format") != current.get("format"):
        return None
    return next((f"{d}: recorded {h[:12]}, now {current[d][:12]}" for d, h in recorded.items()
                 if d != "format" and d in current and current[d] != h), None)


def backfill_store(store_root, root=None, dry_run: bool = False) -> dict:
    """Give every run record under ``store_root`` without a ``data_fingerprint`` the verified fingerprint of the
    data root's files (all computed before anything is written), where that adds the one field and changes
    nothing else. Returns ``{"added": [paths], "had": n, "skipped": [(path, why)]}``."""
    from ..results import dumps

    added, had, skipped = [], 0, []
    for path in sorted(p for p in Path(store_root).glob("*/*.json") if not p.name.startswith(".")):
        try:
            blob = json.loads(text := path.read_text())
            data = blob["spec"]["data"]
        except (ValueError, KeyError, TypeError):
            skipped.append((path, "not a run record"))
            continue
        if blob.get("data_fingerprint"):
            had += 1
        elif dumps(blob) + "\n" != text:
            skipped.append((path, "not in canonical form: rewriting it would change more than the one field"))
        elif (fp := data_fingerprint(data, root, verified=True)) is not None:  # None: a toy, no files
            added.append((path, {**blob, "data_fingerprint": fp}))
    for path, blob in added if not dry_run else ():
        with atomic_write(path) as fh:
            fh.write(dumps(blob) + "\n")
    return {"added": [path for path, _ in added], "had": had, "skipped": skipped}
