"""Tests of dannlib.data: the MNIST-M construction (Ganin & Lempitsky 2015), its cache, the
loaders' scale and errors, and the BSDS500 download. Fake data roots are built in tmp_path;
tests that need the real data use the ``real_data_root`` fixture (skipped without it)."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import tarfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dannlib import data as D

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------
# helpers: fake data roots
# --------------------------------------------------------------------------------------

def _digits(n: int, seed: int = 0) -> np.ndarray:
    """n fake 28x28 uint8 digits: a random filled rectangle of a bright value each, plus noise
    below the threshold, so that the binarised mask is known: digit > 127."""
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 100, size=(n, 28, 28)).astype(np.uint8)
    for i in range(n):
        r, c = rng.integers(2, 14, size=2)
        d[i, r:r + 10, c:c + 8] = rng.integers(128, 256)
    return d


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, monkeypatch, n_train: int = 40, n_test: int = 20) -> dict:
    """MNIST IDX archives in root/MNIST/raw, with the module's MD5 list patched to theirs."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out, md5 = {}, {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        img_name, lbl_name = D.digits._MNIST_FILES[split]
        digits = _digits(n, seed)
        labels = np.arange(n) % 10
        _write_idx(raw / img_name, digits, 2051)
        _write_idx(raw / lbl_name, labels, 2049)
        out[split] = (digits, labels)
        for name in (img_name, lbl_name):
            md5[name] = hashlib.md5((raw / name).read_bytes()).hexdigest()
    monkeypatch.setattr(D.digits, "_mnist_md5s", lambda: dict(md5))
    return out


def _write_jpg(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def _decoded(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


TRAIN_COLOURS = [(200, 40, 40), (40, 200, 40)]
TEST_COLOUR = (40, 40, 220)


def _fake_bsds(root: Path) -> tuple[set, set]:
    """Constant-colour BSDS500 images: train/ in TRAIN_COLOURS, test/ and val/ in TEST_COLOUR.
    Returns the decoded train colours and the decoded test colour (JPEG may shift a level)."""
    for i, (colour, shape) in enumerate(zip(TRAIN_COLOURS, [(40, 50), (47, 33)])):
        _write_jpg(root / "BSDS500" / "images" / "train" / f"{i}.jpg", np.full(shape + (3,), colour, np.uint8))
    for split in ("test", "val"):
        _write_jpg(root / "BSDS500" / "images" / split / "9.jpg", np.full((40, 40, 3), TEST_COLOUR, np.uint8))
    train = {tuple(c) for p in (root / "BSDS500" / "images" / "train").glob("*.jpg")
             for c in np.unique(_decoded(p).reshape(-1, 3), axis=0)}
    test = {tuple(c) for c in np.unique(_decoded(root / "BSDS500/images/test/9.jpg").reshape(-1, 3), axis=0)}
    assert len(train) == 2 and len(test) == 1, "constant JPEGs should decode to constant colours"
    return train, test


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    mnist = _fake_mnist(root, monkeypatch)
    train_colours, test_colours = _fake_bsds(root)
    return {"root": root, "cache": tmp_path / "cache", "mnist": mnist,
            "train_colours": train_colours, "test_colours": test_colours}


# --------------------------------------------------------------------------------------
# blend_mnist_m
# --------------------------------------------------------------------------------------

def _random_backgrounds(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(int(rng.integers(32, 60)), int(rng.integers(32, 60)), 3)).astype(np.uint8)
            for _ in range(n)]


@pytest.mark.parametrize("size", [28, 32])
def test_blend_shape_dtype_range(size):
    digits = _digits(30)
    out = D.blend_mnist_m(digits, _random_backgrounds(), seed=0, size=size)
    assert out.shape == (30, size, size, 3) and out.dtype == np.uint8
    assert out.min() < 30 and out.max() > 225  # spans the range: background and inverted digit


def test_blend_is_deterministic_under_seed():
    digits, bgs = _digits(50), _random_backgrounds()
    a = D.blend_mnist_m(digits, bgs, seed=3)
    b = D.blend_mnist_m(digits, bgs, seed=3)
    c = D.blend_mnist_m(digits, bgs, seed=4)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_blend_rule_by_hand():
    """A 28x28 background leaves one crop position, so the output is known pixel by pixel:
    background where digit <= 127, 255 - background where digit > 127 (per channel)."""
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 5:20, 10:14] = 255
    digit[0, 3, 3] = 128  # just above the threshold -> 255
    digit[0, 4, 4] = 127  # at the threshold -> 0
    digit[0, 6, 6] = 90
    bg = np.zeros((28, 28, 3), np.uint8)
    for r in range(28):
        for c in range(28):
            for ch in range(3):
                bg[r, c, ch] = (r * 9 + c * 3 + ch * 50) % 256
    out = D.blend_mnist_m(digit, [bg], seed=123)[0]
    for r in range(28):
        for c in range(28):
            for ch in range(3):
                d = 255 if digit[0, r, c] > 127 else 0
                assert out[r, c, ch] == abs(int(bg[r, c, ch]) - d), (r, c, ch)
    assert out[3, 3, 0] == 255 - bg[3, 3, 0] and out[4, 4, 0] == bg[4, 4, 0]


def test_blend_draws_backgrounds_from_the_list_only():
    colours = [(10, 20, 30), (250, 0, 120), (0, 180, 60), (90, 90, 90)]
    shapes = [(30, 40), (29, 29), (64, 31), (28, 50)]
    bgs = [np.full(s + (3,), c, np.uint8) for c, s in zip(colours, shapes)]
    digits = _digits(400)
    out = D.blend_mnist_m(digits, bgs, seed=0)
    mask = digits > 127
    used = set()
    for i in range(len(out)):
        background = np.unique(out[i][~mask[i]], axis=0)
        assert len(background) == 1 and tuple(background[0]) in colours  # one image per digit
        colour = background[0]
        assert (out[i][mask[i]] == 255 - colour).all()  # the digit is the inverse of that colour
        used.add(tuple(colour))
    assert used == set(colours)  # every background gets used with 400 draws


def test_blend_crops_are_contiguous_and_match_the_draws():
    """A background whose channels encode (row, column): each output is the crop starting at
    the drawn (top, left), and mnist_m_blend_steps shows the same draws as the build."""
    h, w = 60, 90
    bg = np.zeros((h, w, 3), np.uint8)
    bg[..., 0] = np.arange(h)[:, None]
    bg[..., 1] = np.arange(w)[None, :]
    digits = np.zeros((50, 28, 28), np.uint8)
    out = D.blend_mnist_m(digits, [bg], seed=7)
    _, top, left = D.draw_mnist_m_crops(50, [bg.shape], seed=7, size=28)
    assert ((0 <= top) & (top <= h - 28) & (0 <= left) & (left <= w - 28)).all()
    assert len(set(zip(top.tolist(), left.tolist()))) > 40  # crops vary
    for i in range(50):
        assert (out[i, :, :, 0] == top[i] + np.arange(28)[:, None]).all()
        assert (out[i, :, :, 1] == left[i] + np.arange(28)[None, :]).all()
    digits = _digits(12)
    bgs = _random_backgrounds()
    built = D.blend_mnist_m(digits, bgs, seed=5)
    for s in D.mnist_m_blend_steps(digits, bgs, seed=5, indices=[0, 4, 11]):
        assert (s["blend"] == built[s["index"]]).all()
        assert (s["patch"] == bgs[s["background_index"]][s["top"]:s["top"] + 28, s["left"]:s["left"] + 28]).all()


def test_blend_size_32_resizes_the_digit_then_binarises():
    digits = _digits(5)
    mask = D.binarise_digits(digits, 32)
    assert mask.shape == (5, 32, 32) and set(np.unique(mask)) <= {0, 255}
    # the bright rectangle stays roughly the same fraction of the image
    assert abs((mask > 0).mean() - (digits > 127).mean()) < 0.02


@pytest.mark.parametrize("digits, backgrounds, size, match", [
    (np.zeros((2, 28, 28), np.float32), None, 28, "uint8"),
    (np.zeros((2, 28), np.uint8), None, 28, "shape"),
    (np.zeros((2, 28, 28), np.uint8), [], 28, "empty"),
    (np.zeros((2, 28, 28), np.uint8), [np.zeros((20, 50, 3), np.uint8)], 28, "smaller"),
    (np.zeros((2, 28, 28), np.uint8), [np.zeros((40, 50), np.uint8)], 28, r"\(H, W, 3\)"),
    (np.zeros((2, 28, 28), np.uint8), [np.zeros((40, 50, 3), np.uint8)], 0, "size"),
])
def test_blend_rejects_bad_input(digits, backgrounds, size, match):
    bgs = _random_backgrounds(1) if backgrounds is None else backgrounds
    with pytest.raises(ValueError, match=match):
        D.blend_mnist_m(digits, bgs, seed=0, size=size)


def test_blend_rejects_negative_seed():
    with pytest.raises(ValueError, match="seed"):
        D.blend_mnist_m(_digits(2), _random_backgrounds(1), seed=-1)


# --------------------------------------------------------------------------------------
# load_mnist_m: train backgrounds only, cache
# --------------------------------------------------------------------------------------

def test_mnist_m_uses_only_the_bsds500_train_split(fake_root):
    for split in ("train", "test"):
        images, labels = D.load_mnist_m(split, root=fake_root["root"], cache=fake_root["cache"])
        digits, mnist_labels = fake_root["mnist"][split]
        assert images.shape == (len(digits), 28, 28, 3) and (labels == mnist_labels).all()
        mask = digits > 127
        background_pixels = {tuple(c) for c in np.unique(images[~mask], axis=0)}
        assert background_pixels <= fake_root["train_colours"]
        test_colour = next(iter(fake_root["test_colours"]))
        flat = images.reshape(-1, 3)
        assert not (flat == test_colour).all(1).any()
        assert not (flat == 255 - np.array(test_colour)).all(1).any()


def test_mnist_m_splits_use_different_draws():
    assert D.mnist_m_seed(0, "train") != D.mnist_m_seed(0, "test")
    assert len({D.mnist_m_seed(s, sp) for s in range(5) for sp in D.SPLITS}) == 10


def test_mnist_m_cache_is_reused(fake_root, monkeypatch):
    root, cache = fake_root["root"], fake_root["cache"]
    first, labels = D.load_mnist_m("train", root=root, cache=cache, seed=1)
    path = cache / "mnist_m" / "train_s1_28.npz"
    assert path.is_file()

    def no_build(*a, **k):
        raise AssertionError("rebuilt although the cache is valid")

    monkeypatch.setattr(D.mnist_m, "build_mnist_m", no_build)
    again, labels2 = D.load_mnist_m("train", root=root, cache=cache, seed=1)
    assert again.tobytes() == first.tobytes() and (labels2 == labels).all()


def test_mnist_m_cache_keyed_on_seed_and_size(fake_root):
    root, cache = fake_root["root"], fake_root["cache"]
    a, _ = D.load_mnist_m("train", root=root, cache=cache, seed=0)
    b, _ = D.load_mnist_m("train", root=root, cache=cache, seed=1)
    c, _ = D.load_mnist_m("train", root=root, cache=cache, seed=0, size=32)
    assert a.tobytes() != b.tobytes()
    assert c.shape[1:] == (32, 32, 3)
    names = sorted(p.name for p in (cache / "mnist_m").glob("*.npz"))
    assert names == ["train_s0_28.npz", "train_s0_32.npz", "train_s1_28.npz"]


def test_mnist_m_rebuilt_when_backgrounds_change(fake_root):
    root, cache = fake_root["root"], fake_root["cache"]
    D.load_mnist_m("test", root=root, cache=cache)
    _write_jpg(root / "BSDS500/images/train/2.jpg", np.full((40, 40, 3), (120, 120, 0), np.uint8))
    with pytest.warns(UserWarning, match="other parameters"):
        images, _ = D.load_mnist_m("test", root=root, cache=cache)
    with np.load(cache / "mnist_m" / "test_s0_28.npz") as z:
        assert '"n_backgrounds": 3' in str(z["meta"][()])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "checksum"])
def test_mnist_m_corrupt_cache_is_rebuilt(fake_root, damage):
    root, cache = fake_root["root"], fake_root["cache"]
    good, _ = D.load_mnist_m("test", root=root, cache=cache)
    path = cache / "mnist_m" / "test_s0_28.npz"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"not an npz file")
    else:  # valid file, parameters intact, but the images altered: caught by the checksum
        with np.load(path) as z:
            images, labels, meta = z["images"].copy(), z["labels"], z["meta"]
        images[0, 0, 0, 0] ^= 1
        np.savez(path, images=images, labels=labels, meta=meta)
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt, _ = D.load_mnist_m("test", root=root, cache=cache)
    assert rebuilt.tobytes() == good.tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D.load_mnist_m("test", root=root, cache=cache)  # the rewritten cache is valid again


def test_build_mnist_m_subset_and_params(fake_root):
    images, labels, params = D.build_mnist_m("train", root=fake_root["root"], seed=2, n=7)
    assert images.shape == (7, 28, 28, 3) and len(labels) == 7
    assert params["build_seed"] == 4 and params["n"] == 7 and params["backgrounds"] == "BSDS500/images/train"
    with pytest.raises(ValueError, match="exceeds"):
        D.build_mnist_m("train", root=fake_root["root"], n=10_000)


# --------------------------------------------------------------------------------------
# data root, errors, checksums
# --------------------------------------------------------------------------------------

def test_data_root_and_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("DANNLIB_DATA", raising=False)
    monkeypatch.delenv("DANNLIB_CACHE", raising=False)
    assert D.data_root() == D.common.PROJECT_ROOT / "data"
    assert D.cache_dir() == D.common.PROJECT_ROOT / "data" / "cache"
    monkeypatch.setenv("DANNLIB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("DANNLIB_CACHE", str(tmp_path / "c"))
    assert D.data_root() == tmp_path / "env" and D.cache_dir() == tmp_path / "c"
    assert D.data_root(tmp_path / "arg") == tmp_path / "arg" and D.cache_dir(tmp_path / "x") == tmp_path / "x"


@pytest.mark.parametrize("load", [
    lambda r: D.load_mnist("train", r),
    lambda r: D.load_usps("test", r),
    lambda r: D.load_bsds500_train(r),
    lambda r: D.load_mnist_m("train", r, cache=r / "cache"),
])
def test_missing_data_says_where_and_how_to_fix(tmp_path, load):
    root = tmp_path / "nowhere"
    with pytest.raises(D.DataNotFoundError) as e:
        load(root)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert str(root) in msg and "DANNLIB_DATA" in msg and "download=True" in msg


def test_bad_mnist_md5_is_a_clear_error(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in D.digits._MNIST_FILES["test"]:
        _write_idx(raw / name, np.zeros((3, 28, 28) if "images" in name else (3,)), 2051 if "images" in name else 2049)
    with pytest.raises(D.DataChecksumError, match="MD5") as e:
        D.load_mnist("test", tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(e.value) and "expected" in str(e.value)


def test_torchvision_md5_list_is_the_one_checked():
    import torchvision

    assert D.digits._mnist_md5s() == dict(torchvision.datasets.MNIST.resources)
    assert set(D.digits._mnist_md5s()) == {n for pair in D.digits._MNIST_FILES.values() for n in pair}


def test_load_domain_rejects_unknown_name():
    with pytest.raises(ValueError, match="mnist, mnist_m, mnist_m_released, usps"):
        D.load_domain("svhn", "train")


# --------------------------------------------------------------------------------------
# USPS formats and the common scale
# --------------------------------------------------------------------------------------

def _write_usps_bz2(path: Path, rows: np.ndarray, labels_1_to_10) -> None:
    import bz2

    lines = [" ".join([str(l)] + [f"{j + 1}:{v:g}" for j, v in enumerate(r)]) for r, l in zip(rows, labels_1_to_10)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))


def test_usps_bz2_format_maps_to_0_255_and_labels_0_9(tmp_path, monkeypatch):
    rows = np.zeros((3, 256))
    rows[0] = -1.0
    rows[1] = 1.0
    rows[2, :128] = 0.0
    rows[2, 128:] = -1.0
    for split, name in D.digits._USPS_BZ2.items():
        _write_usps_bz2(tmp_path / "USPS" / name, rows, [1, 10, 5])
    md5 = {n: hashlib.md5((tmp_path / "USPS" / n).read_bytes()).hexdigest() for n in D.digits._USPS_BZ2.values()}
    monkeypatch.setattr(D.digits, "_usps_md5s", lambda: md5)
    images, labels = D.load_usps("train", tmp_path)
    assert images.dtype == np.uint8 and images.shape == (3, 16, 16)
    assert (images[0] == 0).all() and (images[1] == 255).all()
    assert (images[2, :8] == 128).all() and (images[2, 8:] == 0).all()  # row-major, round(127.5) = 128
    assert labels.tolist() == [0, 9, 4]


def test_usps_h5_is_used_for_both_splits_when_present(tmp_path, monkeypatch):
    import h5py

    (tmp_path / "USPS_h5").mkdir()
    with h5py.File(tmp_path / "USPS_h5" / "usps.h5", "w") as f:
        for split, n in (("train", 4), ("test", 2)):
            f[f"{split}/data"] = np.linspace(0, 1, n * 256, dtype=np.float32).reshape(n, 256)
            f[f"{split}/target"] = np.arange(n, dtype=np.int32)
    _write_usps_bz2(tmp_path / "USPS" / "usps.t.bz2", np.full((5, 256), -1.0), [1] * 5)  # must be ignored
    monkeypatch.setattr(D.digits, "_usps_md5s", lambda: pytest.fail("bz2 read although usps.h5 exists"))
    for split, n in (("train", 4), ("test", 2)):
        images, labels = D.load_usps(split, tmp_path)
        assert images.shape == (n, 16, 16) and labels.tolist() == list(range(n))
        assert images.min() == 0 and images.max() == 255
        expected = np.round(np.linspace(0, 1, n * 256, dtype=np.float32).astype(np.float64) * 255)
        assert (images.reshape(-1) == expected).all()


def test_usps_without_h5_never_mixes_formats(tmp_path):
    _write_usps_bz2(tmp_path / "USPS" / "usps.t.bz2", np.zeros((2, 256)), [1, 2])
    with pytest.raises(D.DataNotFoundError, match="usps.bz2"):
        D.load_usps("train", tmp_path)


def test_to_tensor_domain_scale_size_channels():
    grey = np.zeros((4, 16, 16), np.uint8)
    grey[:, 4:12, 4:12] = 255
    x = D.to_tensor_domain(grey, size=28, channels=3)
    assert x.dtype == torch.float32 and x.shape == (4, 3, 28, 28)
    assert x.min() == 0 and x.max() == 1
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    same = np.arange(4 * 28 * 28, dtype=np.int64).reshape(4, 28, 28).astype(np.uint8)
    y = D.to_tensor_domain(same, size=28, channels=1)
    assert torch.equal(y[:, 0], torch.from_numpy(same).float() / 255)  # no resize: exact value / 255
    rgb = np.zeros((2, 28, 28, 3), np.uint8)
    rgb[..., 1] = 200
    z = D.to_tensor_domain(rgb, size=32, channels=3)
    assert z.shape == (2, 3, 32, 32) and torch.allclose(z[:, 1], torch.tensor(200 / 255)) and z[:, 0].max() == 0
    with pytest.raises(ValueError, match="channels"):
        D.to_tensor_domain(grey, channels=2)
    with pytest.raises(ValueError, match="uint8"):
        D.to_tensor_domain(grey.astype(np.float32))


def test_channel_stats_exact():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[0] = 255
    mean, std = D.channel_stats(images)
    assert np.allclose(mean, 0.5) and np.allclose(std, 0.5)
    assert D.channel_histograms(images).shape == (3, 256)


# --------------------------------------------------------------------------------------
# BSDS500 download (a small archive with the real inner layout)
# --------------------------------------------------------------------------------------

def _jpeg_bytes(colour) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), colour, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _fake_bsds_archive(path: Path) -> str:
    def add(tar, name, payload):
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))

    with tarfile.open(path, "w:gz") as tar:
        base = "BSR/BSDS500/data/images"
        add(tar, f"{base}/train/x.jpg", _jpeg_bytes((200, 0, 0)))
        add(tar, f"{base}/train/y.jpg", _jpeg_bytes((0, 200, 0)))
        add(tar, f"{base}/train/notes.txt", b"not an image")
        add(tar, f"{base}/test/t.jpg", _jpeg_bytes((0, 0, 200)))
        add(tar, f"{base}/val/v.jpg", _jpeg_bytes((0, 0, 200)))
        add(tar, "../images/train/evil.jpg", b"path traversal")
        add(tar, f"{base}/train/../../../../../escape/images/train/evil2.jpg", b"path traversal")
        link = tarfile.TarInfo(f"{base}/train/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return hashlib.md5(path.read_bytes()).hexdigest()


def _check_extracted(root: Path):
    folder = root / "BSDS500" / "images" / "train"
    assert sorted(p.name for p in folder.iterdir()) == ["x.jpg", "y.jpg"]
    assert not list(root.rglob("evil*")) and not list(root.parent.rglob("evil*"))
    assert not [p for p in (root / "BSDS500" / "images").iterdir() if p.name != "train"]  # no temp leftovers
    images = D.load_bsds500_train(root)
    assert len(images) == 2 and images[0].shape == (40, 40, 3) and images[0][..., 0].mean() > 150


def test_bsds500_download_from_file_url(tmp_path):
    archive = tmp_path / "srv" / "BSR_bsds500.tgz"
    archive.parent.mkdir()
    md5 = _fake_bsds_archive(archive)
    root = tmp_path / "data"
    D.download_bsds500(root, url=archive.as_uri(), md5=md5)
    _check_extracted(root)


def test_bsds500_download_bad_md5_leaves_nothing(tmp_path):
    archive = tmp_path / "BSR_bsds500.tgz"
    _fake_bsds_archive(archive)
    root = tmp_path / "data"
    with pytest.raises(D.DataChecksumError, match="MD5"):
        D.download_bsds500(root, url=archive.as_uri(), md5="0" * 32)
    assert not (root / "BSDS500" / "images" / "train").exists()
    assert not list((root / "BSDS500" / "images").iterdir())


def test_bsds500_download_over_http(tmp_path):
    srv = tmp_path / "srv"
    srv.mkdir()
    md5 = _fake_bsds_archive(srv / "BSR_bsds500.tgz")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(srv), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/BSR_bsds500.tgz"
        root = tmp_path / "data"
        images = D.load_bsds500_train(root, download=True, url=url, md5=md5)
        assert len(images) == 2
        _check_extracted(root)
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------

def test_real_mnist_and_usps_counts(real_data_root):
    for split, n in (("train", 60_000), ("test", 10_000)):
        x, y = D.load_mnist(split, real_data_root)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
        assert set(np.unique(y)) == set(range(10))
    if not (real_data_root / "USPS_h5" / "usps.h5").is_file():
        pytest.skip("no USPS_h5/usps.h5 in the real data root")
    for split, n in (("train", 7_291), ("test", 2_007)):
        x, y = D.load_usps(split, real_data_root)
        assert x.shape == (n, 16, 16) and set(np.unique(y)) == set(range(10))


def test_real_usps_on_the_mnist_scale(real_data_root):
    if not (real_data_root / "USPS_h5" / "usps.h5").is_file():
        pytest.skip("no USPS_h5/usps.h5 in the real data root")
    mnist, _ = D.load_domain("mnist", "test", real_data_root, size=28, channels=3, n=1000, device="cpu")
    usps, _ = D.load_domain("usps", "test", real_data_root, size=28, channels=3, n=1000, device="cpu")
    for x in (mnist, usps):
        assert x.shape == (1000, 3, 28, 28) and x.dtype == torch.float32
        assert x.min() >= 0 and x.min() < 0.01
        assert 0.95 < x.max() <= 1.0
        assert (x.amax(dim=(1, 2, 3)) > 0.9).float().mean() > 0.95  # nearly every image reaches white
    # both dark background, bright digit: the mean is far from the middle grey
    assert mnist.mean() < 0.35 and usps.mean() < 0.35


def test_real_load_domain_subset_is_seeded(real_data_root):
    a, ya = D.load_domain("mnist", "train", real_data_root, n=2000, seed=0, channels=1, device="cpu")
    b, yb = D.load_domain("mnist", "train", real_data_root, n=2000, seed=0, channels=1, device="cpu")
    c, _ = D.load_domain("mnist", "train", real_data_root, n=2000, seed=1, channels=1, device="cpu")
    assert a.shape == (2000, 1, 28, 28) and torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, c)
    assert len(torch.unique(ya)) == 10


def test_real_mnist_m_test_split(real_data_root, tmp_path):
    files = D.bsds500_train_files(real_data_root)
    if len(files) != 200:
        pytest.skip("the real BSDS500 train images are not in the data root")
    images, labels = D.load_mnist_m("test", real_data_root, cache=tmp_path)
    mnist, mnist_labels = D.load_mnist("test", real_data_root)
    assert images.shape == (10_000, 28, 28, 3) and (labels == mnist_labels).all()
    assert (tmp_path / "mnist_m" / "test_s0_28.npz").is_file()
    # where the digit is on, the pixel is the inverse of a background pixel: the blend rule
    on = mnist > 127
    mean_on, mean_off = images[on].mean(), images[~on].mean()
    assert abs(mean_on + mean_off - 255) < 40  # E[255 - b] + E[b] = 255 (backgrounds alike on and off)
    x, y = D.load_domain("mnist_m", "test", real_data_root, cache=tmp_path, n=100, device="cpu")
    assert x.shape == (100, 3, 28, 28) and 0 <= x.min() and x.max() <= 1
