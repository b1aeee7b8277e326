"""Damaged data files, a stale MNIST-M cache after a same-size background swap, and a cache
folder that refuses writes: each test reproduces the fault and checks the fixed behaviour
(an error naming the file, the data set and the fix; a rebuild; an in-memory build with one
warning)."""
from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dannlib import data as D

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------
# helpers: a small fake data root
# --------------------------------------------------------------------------------------

def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, monkeypatch, n: int = 30) -> None:
    """MNIST IDX archives (n digits per split) in root/MNIST/raw; the MD5 list patched to theirs."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    md5 = {}
    for split in D.SPLITS:
        img_name, lbl_name = D.digits._MNIST_FILES[split]
        _write_idx(raw / img_name, rng.integers(0, 256, size=(n, 28, 28)), 2051)
        _write_idx(raw / lbl_name, np.arange(n) % 10, 2049)
        for name in (img_name, lbl_name):
            md5[name] = hashlib.md5((raw / name).read_bytes()).hexdigest()
    monkeypatch.setattr(D.digits, "_mnist_md5s", lambda: dict(md5))


def _jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _decoded(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _fake_bsds(root: Path, n: int = 3) -> list[Path]:
    """n textured (noisy) train images of 60x70, so that a constant image encodes smaller."""
    folder = D.bsds500_train_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        (folder / f"{i}.jpg").write_bytes(_jpeg(rng.integers(0, 256, size=(60, 70, 3)).astype(np.uint8)))
    return D.bsds500_train_files(root)


def _same_size_swap(path: Path, colour=(10, 200, 90)) -> None:
    """Replace ``path`` by another picture of the same byte size: a constant-colour JPEG of
    the same dimensions, padded after its end marker with zeros (decoders ignore them)."""
    h, w = _decoded(path).shape[:2]
    old = path.read_bytes()
    new = _jpeg(np.full((h, w, 3), colour, np.uint8))
    assert len(new) < len(old), "the replacement must encode smaller to be padded to the same size"
    path.write_bytes(new + b"\0" * (len(old) - len(new)))
    assert path.stat().st_size == len(old)
    assert (_decoded(path) != colour).sum() < h * w  # it decodes, to the new picture


def _name_size_fingerprint(files) -> str:
    """The old fingerprint (names and sizes only), to show that it misses the swap."""
    text = "\n".join(f"{p.name}:{p.stat().st_size}" for p in sorted(files, key=lambda p: p.name))
    return hashlib.sha256(text.encode()).hexdigest()


def _write_sha256sums(root: Path, files) -> None:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}" for p in files]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _fake_mnist(root, monkeypatch)
    files = _fake_bsds(root)
    return {"root": root, "cache": tmp_path / "cache", "files": files}


# --------------------------------------------------------------------------------------
# a. damaged USPS h5 and BSDS500 jpg files: DataChecksumError naming file, data set, fix
# --------------------------------------------------------------------------------------

def _write_usps_h5(path: Path, n_train: int = 300, n_test: int = 50) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for split, n in (("train", n_train), ("test", n_test)):
            f[f"{split}/data"] = rng.random((n, 256), dtype=np.float32)
            f[f"{split}/target"] = np.arange(n, dtype=np.int32) % 10


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "empty", "other layout"])
def test_damaged_usps_h5_is_a_checksum_error(tmp_path, damage):
    import h5py

    h5 = tmp_path / "USPS_h5" / "usps.h5"
    _write_usps_h5(h5)
    good = h5.read_bytes()
    if damage == "random bytes":
        h5.write_bytes(np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    elif damage == "truncated":
        h5.write_bytes(good[:len(good) // 2])
    elif damage == "empty":
        h5.write_bytes(b"")
    else:
        with h5py.File(h5, "w") as f:
            f["images"] = np.zeros((3, 256), np.float32)
    with pytest.raises(D.DataChecksumError) as e:
        D.load_usps("train", tmp_path)
    msg = str(e.value)
    assert not isinstance(e.value, OSError)
    assert str(h5.absolute()) in msg and "USPS" in msg and "DANNLIB_DATA" in msg and "good" in msg
    assert e.value.dataset == "USPS" and Path(e.value.path) == h5.absolute()
    h5.write_bytes(good)  # the fix works: a good copy loads (the failure was not cached)
    images, labels = D.load_usps("train", tmp_path)
    assert images.shape == (300, 16, 16) and labels[:3].tolist() == [0, 1, 2]


def test_usps_h5_checked_against_sha256sums(tmp_path):
    h5 = tmp_path / "USPS_h5" / "usps.h5"
    _write_usps_h5(h5, n_train=20, n_test=10)
    (tmp_path / "SHA256SUMS").write_text(f"{'ab' * 32}  USPS_h5/usps.h5\n")
    with pytest.raises(D.DataChecksumError, match="SHA-256") as e:
        D.load_usps("test", tmp_path)
    assert "usps.h5" in str(e.value) and "USPS" in str(e.value) and "SHA256SUMS" in str(e.value)
    _write_sha256sums(tmp_path, [h5])
    images, _ = D.load_usps("test", tmp_path)
    assert images.shape == (10, 16, 16)


@pytest.mark.parametrize("damage", ["empty", "truncated", "not a jpeg"])
def test_damaged_bsds500_jpg_is_a_checksum_error(fake_root, damage):
    root, bad = fake_root["root"], fake_root["files"][1]
    good = bad.read_bytes()
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "truncated":
        bad.write_bytes(good[:len(good) // 3])
    else:
        bad.write_bytes(b"GIF89a" + b"\0" * 100)
    for load in (lambda: D.load_bsds500_train(root),
                 lambda: D.load_mnist_m("train", root, cache=fake_root["cache"])):
        with pytest.raises(D.DataChecksumError) as e:
            load()
        msg = str(e.value)
        assert str(bad) in msg and "BSDS500" in msg and "download=True" in msg and "DANNLIB_DATA" in msg
        assert "image file is truncated" not in msg.split("(")[0]  # PIL's words only as the detail
        assert e.value.dataset == "BSDS500"
    assert not list(fake_root["cache"].rglob("*.npz"))  # nothing cached from a damaged background
    bad.write_bytes(good)
    assert len(D.load_bsds500_train(root)) == 3


# --------------------------------------------------------------------------------------
# b. MNIST-M cache keyed on the backgrounds' contents; SHA256SUMS checked
# --------------------------------------------------------------------------------------

def test_backgrounds_fingerprint_sees_contents(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"1234")
    b.write_bytes(b"abcd")
    before = D.backgrounds_fingerprint([a, b])
    assert D.backgrounds_fingerprint([b, a]) == before  # order-free: sorted by name
    a.write_bytes(b"1235")  # same size, other bytes
    assert D.backgrounds_fingerprint([a, b]) != before
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    assert D.backgrounds_fingerprint([a, b], digests) == D.backgrounds_fingerprint([a, b])


def _check_swap_rebuilds(root: Path, cache: Path, swapped: Path) -> None:
    first, _ = D.load_mnist_m("test", root, cache=cache)
    files = D.bsds500_train_files(root)
    old_key = _name_size_fingerprint(files)
    _same_size_swap(swapped)
    assert _name_size_fingerprint(files) == old_key  # names and sizes alone would miss it
    with pytest.warns(UserWarning, match="other parameters.*backgrounds_sha256"):
        again, _ = D.load_mnist_m("test", root, cache=cache)
    fresh, _, params = D.build_mnist_m("test", root)
    assert again.tobytes() == fresh.tobytes() and again.tobytes() != first.tobytes()
    with np.load(cache / "mnist_m" / "test_s0_28.npz") as z:
        assert params["backgrounds_sha256"] in str(z["meta"][()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D.load_mnist_m("test", root, cache=cache)  # the rewritten cache is valid again


def test_mnist_m_cache_rebuilt_after_same_size_swap(fake_root):
    _check_swap_rebuilds(fake_root["root"], fake_root["cache"], fake_root["files"][0])


def test_mnist_m_same_size_swap_of_real_backgrounds(real_data_root, tmp_path, monkeypatch):
    """The brief's scenario on the 200 real BSDS500 train images (copied), fake digits."""
    real = D.bsds500_train_files(real_data_root)
    if len(real) != 200:
        pytest.skip("the real BSDS500 train images are not in the data root")
    root = tmp_path / "data"
    shutil.copytree(D.bsds500_train_dir(real_data_root), D.bsds500_train_dir(root))
    _fake_mnist(root, monkeypatch)
    shapes = [b.shape for b in D.load_bsds500_train(root)]
    used = D.draw_mnist_m_crops(30, shapes, D.mnist_m_seed(0, "test"))[0][0]  # digit 0's background
    _check_swap_rebuilds(root, tmp_path / "cache", D.bsds500_train_files(root)[used])


def test_swap_of_a_file_listed_in_sha256sums_names_it(fake_root):
    root, cache, files = fake_root["root"], fake_root["cache"], fake_root["files"]
    _write_sha256sums(root, files)
    D.load_mnist_m("test", root, cache=cache)  # listed and intact: fine
    _same_size_swap(files[2])
    for load in (lambda: D.load_mnist_m("test", root, cache=cache), lambda: D.load_bsds500_train(root),
                 lambda: D.build_mnist_m("test", root)):
        with pytest.raises(D.DataChecksumError, match="SHA256SUMS") as e:
            load()
        assert str(files[2]) in str(e.value) and "BSDS500" in str(e.value) and e.value.path == str(files[2])


def test_sha256sums_format(tmp_path):
    (tmp_path / "SHA256SUMS").write_text(f"{'0a' * 32}  a/b.jpg\n{'1B' * 32} *c d.jpg\n\n")
    assert D.read_sha256sums(tmp_path) == {"a/b.jpg": "0a" * 32, "c d.jpg": "1b" * 32}
    assert D.read_sha256sums(tmp_path / "none") == {}
    (tmp_path / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(D.DataChecksumError, match="line 1"):
        D.read_sha256sums(tmp_path)


def test_real_backgrounds_match_the_shared_sha256sums(real_data_root):
    sums = D.read_sha256sums(real_data_root)
    files = D.bsds500_train_files(real_data_root)
    if len(files) != 200 or not sums:
        pytest.skip("no real BSDS500 train images with a SHA256SUMS in the data root")
    digests = D.bsds500_train_digests(real_data_root, files)  # raises on any mismatch
    listed = {f"BSDS500/images/train/{p.name}": d for p, d in zip(files, digests)}
    assert {k: sums[k] for k in listed} == listed  # every image is listed, and checked


# --------------------------------------------------------------------------------------
# c, d. a cache folder that refuses writes: in-memory build, one warning naming DANNLIB_CACHE
# --------------------------------------------------------------------------------------

def _load_warning(root, cache) -> tuple[np.ndarray, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, _ = D.load_mnist_m("test", root, cache=cache)
    return images, [w for w in caught if issubclass(w.category, UserWarning)]


def _assert_one_readonly_warning(caught, folder: Path) -> None:
    assert len(caught) == 1, [str(w.message) for w in caught]
    msg = str(caught[0].message)
    assert "DANNLIB_CACHE" in msg and str(folder) in msg and "writable" in msg and "Fix" in msg


def test_readonly_cache_builds_in_memory_with_one_warning(fake_root, monkeypatch):
    root, cache = fake_root["root"], fake_root["cache"]
    expected, _, _ = D.build_mnist_m("test", root)
    monkeypatch.setattr(D.common, "_writable", lambda folder: False)
    images, caught = _load_warning(root, cache)
    assert images.tobytes() == expected.tobytes()
    _assert_one_readonly_warning(caught, cache / "mnist_m")
    assert not list(cache.rglob("*.npz")) and not list(cache.rglob(".*"))
    with pytest.raises(D.CacheNotWritableError, match="DANNLIB_CACHE") as e:
        D.check_cache_writable(cache)
    assert isinstance(e.value, PermissionError) and str(cache) in str(e.value)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM])
def test_write_refused_by_the_file_system_warns_once(fake_root, monkeypatch, code):
    """The check passes but the real write fails (as on a read-only mount): utils.atomic_write
    is run for real, with the temporary file's creation refused."""
    root, cache = fake_root["root"], fake_root["cache"]
    expected, _, _ = D.build_mnist_m("test", root)
    monkeypatch.setattr(D.common, "_writable", lambda folder: True)

    def refuse(*a, **k):
        raise OSError(code, os.strerror(code))

    import dannlib.utils

    monkeypatch.setattr(dannlib.utils.tempfile, "mkstemp", refuse)
    images, caught = _load_warning(root, cache)
    assert images.tobytes() == expected.tobytes()
    _assert_one_readonly_warning(caught, cache / "mnist_m")


def test_other_write_errors_are_not_hidden(fake_root, monkeypatch):
    @contextlib.contextmanager
    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield  # pragma: no cover

    monkeypatch.setattr(D.common, "atomic_write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        D.load_mnist_m("test", fake_root["root"], cache=fake_root["cache"])


def test_valid_cache_in_a_readonly_folder_is_still_read(fake_root, monkeypatch):
    root, cache = fake_root["root"], fake_root["cache"]
    first, _ = D.load_mnist_m("test", root, cache=cache)
    monkeypatch.setattr(D.common, "_writable", lambda folder: pytest.fail("checked although nothing to write"))
    monkeypatch.setattr(D.mnist_m, "build_mnist_m", lambda *a, **k: pytest.fail("rebuilt a valid cache"))
    again, caught = _load_warning(root, cache)
    assert again.tobytes() == first.tobytes() and not caught


def test_cache_under_a_file_is_not_writable_even_for_root(fake_root, tmp_path, monkeypatch):
    """A real unwritable place that root cannot write either: below a regular file. Set
    through DANNLIB_CACHE, as a user would."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    cache = blocker / "cache"
    monkeypatch.setenv("DANNLIB_CACHE", str(cache))
    assert D.common._writable(cache) is False
    images, caught = _load_warning(fake_root["root"], None)
    assert images.shape == (30, 28, 28, 3)
    _assert_one_readonly_warning(caught, cache / "mnist_m")
    with pytest.raises(D.CacheNotWritableError, match="DANNLIB_CACHE"):
        D.check_cache_writable()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through chmod 0o555")
def test_chmod_555_cache_folder(fake_root):
    cache = fake_root["cache"]
    (cache / "mnist_m").mkdir(parents=True)
    os.chmod(cache / "mnist_m", 0o555)
    try:
        images, caught = _load_warning(fake_root["root"], cache)
        assert images.shape == (30, 28, 28, 3)
        _assert_one_readonly_warning(caught, cache / "mnist_m")
    finally:
        os.chmod(cache / "mnist_m", 0o755)


def test_check_cache_writable_creates_and_leaves_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "new" / "cache"
    assert D.check_cache_writable(cache) == cache and cache.is_dir()
    assert not list(cache.iterdir())  # the probe file is gone
    monkeypatch.setenv("DANNLIB_CACHE", str(tmp_path / "env"))
    assert D.check_cache_writable() == tmp_path / "env"
