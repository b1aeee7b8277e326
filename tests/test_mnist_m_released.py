"""The released MNIST-M loader (dannlib.data.mnist_m_released): the official layout read from a
gzip tar into the cache; clear errors for a missing, truncated or
mislabelled archive. Small archives are built here; the real one is read as a slice."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from dannlib.data import (DataChecksumError, DataNotFoundError, load_domain, load_mnist,
                          load_mnist_m_released, released_cache_path)
from dannlib.data import mnist_m_released as mr


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _archive(root, counts=None, labels=None, drop_image=None, label_text=None):
    """A small archive in the official layout under root/MNIST_M/mnist_m.tar.gz; returns the
    images and labels of each split."""
    counts = counts or {"train": 5, "test": 3}
    out = {}
    path = root / "MNIST_M" / "mnist_m.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for i, (split, n) in enumerate(counts.items()):
            x = _images(n, i)
            y = np.arange(n) % 10 if labels is None else np.asarray(labels[split])
            out[split] = (x, y)
            names = [f"{k:08d}.png" for k in range(n)]
            text = label_text if label_text is not None else "".join(f"{a} {b}\n" for a, b in zip(names, y))
            add(f"mnist_m/mnist_m_{split}_labels.txt", text.encode())
            for k, name in enumerate(names):
                if name != drop_image:
                    add(f"mnist_m/mnist_m_{split}/{name}", _png(x[k]))
    return path, out


@pytest.fixture
def small(tmp_path, monkeypatch):
    monkeypatch.setattr(mr, "RELEASED_COUNTS", {"train": 5, "test": 3})
    return tmp_path


def test_reads_the_official_layout_exactly_and_caches_it(small):
    path, want = _archive(small / "root")
    cache = small / "cache"
    for split in ("train", "test"):
        x, y = load_mnist_m_released(split, small / "root", cache)
        assert x.dtype == np.uint8 and x.shape == want[split][0].shape
        assert np.array_equal(x, want[split][0]) and np.array_equal(y, want[split][1])
        assert released_cache_path(split, cache).is_file()
    # a second read comes from the cache (the archive is gone: only its digest is read, which fails)
    x2, _ = load_mnist_m_released("train", small / "root", cache)
    assert np.array_equal(x2, want["train"][0])


def test_a_changed_archive_is_read_again_not_served_from_the_cache(small):
    _archive(small / "root")
    cache = small / "cache"
    load_mnist_m_released("test", small / "root", cache)
    _, want = _archive(small / "root", labels={"train": [1] * 5, "test": [9, 9, 9]})
    _, y = load_mnist_m_released("test", small / "root", cache)
    assert y.tolist() == [9, 9, 9]


def test_missing_archive_names_the_paths_and_the_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"(?s)released MNIST-M.*MNIST_M/mnist_m.tar.gz.*DANNLIB_DATA"):
        load_mnist_m_released("test", tmp_path, tmp_path / "cache")
    with pytest.raises(DataNotFoundError, match="cannot be downloaded"):
        load_mnist_m_released("test", tmp_path, tmp_path / "cache", download=True)


def test_truncated_archive_is_a_checksum_error_naming_it(small):
    path, _ = _archive(small / "root")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataChecksumError, match=r"truncated"):
        load_mnist_m_released("train", small / "root", small / "cache")


def test_an_image_missing_from_the_archive_is_named(small):
    _archive(small / "root", drop_image="00000002.png")
    with pytest.raises(DataChecksumError, match="00000002.png"):
        load_mnist_m_released("test", small / "root", small / "cache")


@pytest.mark.parametrize("text, match", [("00000000.png 7\n00000001.png eleven\n", "line 2"),
                                         ("00000000.png 12\n", "label 0-9"),
                                         ("00000000.png 1\n00000000.png 2\n", "twice")])
def test_mislabelled_lists_are_refused(small, text, match):
    _archive(small / "root", label_text=text)
    with pytest.raises(DataChecksumError, match=match):
        load_mnist_m_released("test", small / "root", small / "cache")


def test_a_label_list_of_the_wrong_length_is_refused(small, monkeypatch):
    monkeypatch.setattr(mr, "RELEASED_COUNTS", {"train": 5, "test": 4})
    _archive(small / "root")
    with pytest.raises(DataChecksumError, match="lists 3 images, the release has 4"):
        load_mnist_m_released("test", small / "root", small / "cache")


def test_sha256sums_at_the_root_are_checked(small):
    path, _ = _archive(small / "root")
    (small / "root" / "SHA256SUMS").write_text("0" * 64 + "  MNIST_M/mnist_m.tar.gz\n")
    with pytest.raises(DataChecksumError, match="SHA-256"):
        load_mnist_m_released("test", small / "root", small / "cache")


def test_real_release_slice_matches_mnist_labels(real_data_root):
    if not (real_data_root / "MNIST_M" / "mnist_m.tar.gz").is_file():
        pytest.skip("the released MNIST-M is not in the data root")
    x, y = load_mnist_m_released("test", real_data_root, limit=50)
    _, mnist_y = load_mnist("test", real_data_root)
    assert x.shape == (50, 32, 32, 3) and x.dtype == np.uint8
    assert np.array_equal(y, mnist_y[:50])  # the release keeps MNIST's order and labels


def test_load_domain_resizes_the_release_to_the_study_size(small):
    _archive(small / "root")
    x, y = load_domain("mnist_m_released", "test", small / "root", size=28, channels=3, cache=small / "cache")
    assert tuple(x.shape) == (3, 3, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1
