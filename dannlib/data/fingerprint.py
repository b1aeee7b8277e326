"""Fingerprints of the data a run is trained on, per domain: a sha256 over the input files its
loader reads. MNIST: its four raw archives; USPS: ``USPS_h5/usps.h5`` or, without it,
torchvision's two bz2 files (the loader's own choice); MNIST-M (the study's build): MNIST's
fingerprint with the BSDS500 backgrounds' (:func:`~dannlib.data.bsds500.backgrounds_fingerprint`);
the released MNIST-M: its archive's digest.

The run store records the fingerprint of a run's data with the run (``data_fingerprint``)
and compares it on reuse, so that changed data (a replaced background image, say, with no
``SHA256SUMS`` to catch it) means recomputation -- without a change of any run's key, which
would invalidate every stored run. Computed once per domain and data root per process (about
half a second for all five domains, most of it the released MNIST-M's 133 MB archive).
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from .common import SPLITS, DataChecksumError, DataNotFoundError, _file_digest, data_root, read_sha256sums

#: Bump when what a fingerprint covers changes (older ones are then not compared).
FINGERPRINT_FORMAT = 1
DIGIT_DOMAINS = ("mnist", "usps", "mnist_m", "mnist_m_released")


def _files(domain: str, base: Path) -> list[Path]:
    from .digits import _MNIST_FILES, _USPS_BZ2

    if domain == "mnist":
        return [base / "MNIST" / "raw" / name for s in SPLITS for name in _MNIST_FILES[s]]
    if domain == "usps":
        h5 = base / "USPS_h5" / "usps.h5"
        return [h5] if h5.is_file() else [base / "USPS" / _USPS_BZ2[s] for s in SPLITS]
    if domain == "mnist_m":
        from .bsds500 import bsds500_train_files

        return _files("mnist", base) + bsds500_train_files(base)
    if domain == "mnist_m_released":
        from .mnist_m_released import released_mnist_m_source

        source = released_mnist_m_source(base)
        return [source] if source.is_file() else [source / f"mnist_m_{s}_labels.txt" for s in SPLITS]
    raise ValueError(f"domain must be one of {', '.join(DIGIT_DOMAINS)}, got {domain!r}")


@functools.lru_cache(maxsize=None)
def _digests(domain: str, root: str) -> tuple[tuple[Path, str], ...]:
    files = _files(domain, Path(root))
    missing = [p for p in files if not p.is_file()]
    if missing or not files:
        raise DataNotFoundError(domain, missing or [Path(root)])
    return tuple((p, _file_digest(p, "sha256")) for p in files)


def domain_fingerprint(domain: str, root: str | os.PathLike | None = None) -> str:
    """sha256 of the sorted ``relative path:sha256`` lines of the files ``domain`` is loaded
    from under the data root (``data_root(root)``); DataNotFoundError when one is missing."""
    base = data_root(root).absolute()
    lines = sorted(f"{p.relative_to(base).as_posix()}:{d}" for p, d in _digests(domain, str(base)))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def data_fingerprint(data: dict, root: str | os.PathLike | None = None) -> dict | None:
    """The fingerprint of a run's data spec (``dannlib.store.digits_data``): ``{"format": ..,
    <domain>: <hex>, ...}`` for its source and target; None for a toy (made from its seed, no
    files). Raises DataNotFoundError where a file is missing."""
    if data.get("kind") != "digits":
        return None
    out = {"format": FINGERPRINT_FORMAT}
    for domain in dict.fromkeys((data["source"], data["target"])):
        out[domain] = domain_fingerprint(domain, root)
    return out


def current_fingerprint(data: dict, root=None) -> dict | None:
    """:func:`data_fingerprint`, or None where it cannot be computed (data missing or
    unreadable: a store is still read, e.g. to render runs on a machine without the data)."""
    try:
        return data_fingerprint(data, root)
    except (OSError, ValueError):
        return None


def fingerprint_mismatch(recorded: dict | None, current: dict | None) -> str | None:
    """"domain: recorded <hex>, now <hex>" for the first domain whose fingerprint changed, or
    None (also when either side is unknown or of another format)."""
    if not recorded or not current or recorded.get("format") != current.get("format"):
        return None
    for domain, digest in recorded.items():
        if domain != "format" and domain in current and current[domain] != digest:
            return f"{domain}: recorded {digest[:12]}, now {current[domain][:12]}"
    return None


def verified_fingerprint(data: dict, root=None) -> dict | None:
    """:func:`data_fingerprint` after checking that every file it covers is listed in the data
    root's ``SHA256SUMS`` with that digest (DataChecksumError otherwise): the fingerprint of
    data known to be the published files, for backfilling runs stored before fingerprints."""
    fp = data_fingerprint(data, root)
    if fp is None:
        return None
    base = data_root(root).absolute()
    sums = read_sha256sums(base)
    for domain in dict.fromkeys((data["source"], data["target"])):
        for path, digest in _digests(domain, str(base)):
            rel = path.relative_to(base).as_posix()
            if sums.get(rel) != digest:
                raise DataChecksumError(f"{domain}: {path} is not listed with SHA-256 {digest} in "
                                        f"{base / 'SHA256SUMS'}: its fingerprint cannot be vouched for",
                                        dataset=domain, path=path)
    return fp


def clear_cache() -> None:
    """Forget the digests computed in this process (after the data changed)."""
    _digests.cache_clear()


def backfill_store(store_root: str | os.PathLike, root=None, dry_run: bool = False) -> dict:
    """Give every record in the store at ``store_root`` that has no ``data_fingerprint`` (a
    run stored before fingerprints) the :func:`verified_fingerprint` of the data root's
    current files: the data it was trained on, as far as the data root's ``SHA256SUMS``
    vouches for it (a file not listed, or not matching, raises DataChecksumError before
    anything is written). A record is rewritten only where that adds the one field and
    changes nothing else (its text is the canonical form ``dumps(record)``; others are
    skipped). Returns ``{"added": [paths], "had": n, "skipped": [(path, why)]}``."""
    import json

    from ..results import dumps
    from ..utils import atomic_write

    todo, had, skipped = [], 0, []
    for path in sorted(Path(store_root).glob("*/*.json")):
        if path.name.startswith("."):
            continue
        text = path.read_text()
        try:
            blob = json.loads(text)
            data = blob["spec"]["data"]
        except (ValueError, KeyError, TypeError):
            skipped.append((path, "not a run record"))
            continue
        if blob.get("data_fingerprint"):
            had += 1
        elif dumps(blob) + "\n" != text:
            skipped.append((path, "not in canonical form: rewriting it would change more than the one field"))
        else:
            todo.append((path, blob, data))
    fingerprints = {}
    for _, _, data in todo:  # every fingerprint first: a file that cannot be vouched for stops it all
        key = json.dumps(data, sort_keys=True)
        if key not in fingerprints:
            fingerprints[key] = verified_fingerprint(data, root)
    added = []
    for path, blob, data in todo:
        fp = fingerprints[json.dumps(data, sort_keys=True)]
        if fp is None:  # a toy: no files
            continue
        if not dry_run:
            with atomic_write(path) as fh:
                fh.write(dumps({**blob, "data_fingerprint": fp}) + "\n")
        added.append(path)
    return {"added": added, "had": had, "skipped": skipped}
