"""How far our MNIST-M build is from the released one (notebook 02), and which construction
factor moves it: variant builds that change one factor at a time, a classifier trained to tell
two image sets apart (held-out accuracy 0.5: indistinguishable), and stored networks scored on
several test sets.

The factors (each a keyword of :func:`build_variant`; the defaults are the study's build,
``dannlib.data.blend_mnist_m``):

- ``backgrounds``: which BSDS500 split the patches come from ("train", "test", "val", "all");
  the papers do not say (Ganin & Lempitsky 2015, sec. 5: "patches randomly extracted from color
  photos from BSDS500");
- ``build_size``: the side the digit is resized to and the patch cropped at (28, or 32 as the
  released images are), before every image is brought to the networks' 28 px;
- ``patch_scale``: the crop is ``patch_scale`` times larger and shrunk to the patch size
  (smoother, larger-scale textures);
- ``threshold``: the digit's binarisation threshold (lower: thicker strokes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .data import (DataNotFoundError, blend_mnist_m, data_root, load_mnist, load_mnist_m_released, mnist_m_seed,
                   to_tensor_domain)
from .data.bsds500 import _decode_jpg
from .utils import check_choice, seeded

BACKGROUND_SPLITS = ("train", "test", "val", "all")


def load_bsds500_split(split: str = "train", root=None) -> list[np.ndarray]:
    """The BSDS500 images of ``split`` ("train", "test", "val" or "all") as uint8 (H, W, 3)
    arrays, sorted by file name, from ``<data root>/BSDS500/images/<split>/*.jpg``."""
    check_choice("split", split, BACKGROUND_SPLITS)
    splits = ("train", "test", "val") if split == "all" else (split,)
    out = []
    for s in splits:
        folder = data_root(root) / "BSDS500" / "images" / s
        files = sorted(folder.glob("*.jpg"))
        if not files:
            raise DataNotFoundError(f"BSDS500 {s} images (*.jpg)", [folder])
        out += [_decode_jpg(f) for f in files]
    return out


def _crop_scaled(backgrounds, n: int, size: int, scale: float, seed: int) -> np.ndarray:
    """``n`` patches (n, crop, crop, 3): a ``crop = round(size * scale)`` square crop at a
    uniform position of a uniform background (the caller shrinks them to ``size``)."""
    rng = np.random.default_rng(seed)
    crop = int(round(size * scale))
    bg = rng.integers(0, len(backgrounds), n)
    out = np.empty((n, crop, crop, 3), np.uint8)
    for i, b in enumerate(bg):
        img = backgrounds[b]
        top = rng.integers(0, img.shape[0] - crop + 1)
        left = rng.integers(0, img.shape[1] - crop + 1)
        out[i] = img[top:top + crop, left:left + crop]
    return out


def build_variant(split: str = "test", root=None, *, backgrounds: str = "train", build_size: int = 28,
                  patch_scale: float = 1.0, threshold: int = 127, seed: int = 0,
                  n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-M ``split`` built with one or more factors changed: uint8 (N, build_size,
    build_size, 3) and labels. With the defaults it equals ``load_mnist_m(split, seed=seed)``
    (the same draws, ``blend_mnist_m``); otherwise the digit is resized to ``build_size`` and
    binarised at ``threshold``, the patch is cropped ``patch_scale`` times larger and shrunk,
    and the blend is the same ``|patch - digit|``."""
    digits, labels = load_mnist(split, root)
    if n is not None:
        digits, labels = digits[:n], labels[:n]
    images_bg = load_bsds500_split(backgrounds, root)
    build_seed = mnist_m_seed(seed, split)
    if patch_scale == 1.0 and threshold == 127:
        return blend_mnist_m(digits, images_bg, build_seed, build_size), labels
    x = torch.from_numpy(digits.astype(np.float32))[:, None]
    if build_size != digits.shape[1]:
        x = F.interpolate(x, size=(build_size, build_size), mode="bilinear", align_corners=False)
    mask = ((x[:, 0].numpy() > threshold).astype(np.int16) * 255)[..., None]
    big = _crop_scaled(images_bg, len(digits), build_size, patch_scale, build_seed)
    if patch_scale != 1.0:
        t = torch.from_numpy(big).permute(0, 3, 1, 2).float()
        big = F.interpolate(t, size=(build_size, build_size), mode="bilinear", align_corners=False,
                            antialias=True).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return np.abs(big.astype(np.int16) - mask).astype(np.uint8), labels


class _SetClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x):
        return self.body(x).squeeze(-1)


@dataclass
class TwoSetTest:
    """A classifier's held-out accuracy at telling set A from set B (0.5: indistinguishable)."""

    accuracy: float
    n_test: int
    n_train: int


def distinguishability(a_uint8: np.ndarray, b_uint8: np.ndarray, *, size: int = 28, n_train: int = 4000,
                       n_test: int = 2000, steps: int = 600, seed: int = 0) -> TwoSetTest:
    """Train a small CNN (2 conv layers) to tell images ``a`` (label 0) from ``b`` (label 1),
    both brought to ``size`` px by ``to_tensor_domain``; ``n_train`` of each for training
    (Adam 1e-3, batch 64, ``steps`` steps), ``n_test`` other ones of each held out. Returns the
    held-out accuracy: 0.5 means the sets cannot be told apart by this classifier."""
    need = n_train + n_test
    if len(a_uint8) < need or len(b_uint8) < need:
        raise ValueError(f"need {need} images of each set (n_train + n_test), got {len(a_uint8)} and {len(b_uint8)}")
    rng = np.random.default_rng(seed)
    ia, ib = rng.permutation(len(a_uint8))[:need], rng.permutation(len(b_uint8))[:need]
    xa, xb = to_tensor_domain(a_uint8[ia], size, 3), to_tensor_domain(b_uint8[ib], size, 3)
    xtr = torch.cat([xa[:n_train], xb[:n_train]])
    ytr = torch.cat([torch.zeros(n_train), torch.ones(n_train)])
    xte = torch.cat([xa[n_train:], xb[n_train:]])
    yte = torch.cat([torch.zeros(n_test), torch.ones(n_test)])
    with seeded(seed):
        net = _SetClassifier()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xtr), (64,), generator=g)
        loss = F.binary_cross_entropy_with_logits(net(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(xte[i:i + 512]) for i in range(0, len(xte), 512)]) > 0
    return TwoSetTest(float((pred.float() == yte).float().mean()), int(len(xte)), int(len(xtr)))


@torch.no_grad()
def score_networks(nets: dict, test_sets: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list[dict]:
    """Accuracy of each network (``{label: module}``, eval mode) on each test set
    (``{name: (x, y)}``): one record per pair, ``{"network", "test_set", "accuracy"}``."""
    out = []
    for label, net in nets.items():
        net.eval()
        for name, (x, y) in test_sets.items():
            correct = sum(int((net(x[i:i + 1024]).argmax(-1) == y[i:i + 1024]).sum()) for i in range(0, len(x), 1024))
            out.append({"network": label, "test_set": name, "accuracy": correct / len(x)})
    return out


def released_test(root=None, size: int = 28) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """The released MNIST-M test split: uint8 images and the networks' ``(x, y)`` at ``size``."""
    images, labels = load_mnist_m_released("test", root)
    return images, to_tensor_domain(images, size, 3), torch.from_numpy(labels)


#: The variants notebook 02 builds: one factor changed at a time from our build ("ours"), then
#: combined with the one that moved the classifier most (the 32 px build).
VARIANTS: dict[str, dict] = {
    "ours": {},
    "backgrounds: BSDS500 test": {"backgrounds": "test"},
    "backgrounds: BSDS500 val": {"backgrounds": "val"},
    "backgrounds: all 500": {"backgrounds": "all"},
    "built at 32 px": {"build_size": 32},
    "32 px, patch x1.5": {"build_size": 32, "patch_scale": 1.5},
    "32 px, patch x2": {"build_size": 32, "patch_scale": 2.0},
    "32 px, threshold 64": {"build_size": 32, "threshold": 64},
}

#: Sizes per profile: test digits per variant (None: all 10,000), the two-set classifier's
#: images per set and steps, and the variants built.
SETTINGS = {
    "smoke": {"n": 1500, "n_train": 500, "n_test": 250, "steps": 40, "variants": ["ours", "built at 32 px"]},
    "quick": {"n": None, "n_train": 4000, "n_test": 2000, "steps": 400, "variants": list(VARIANTS)},
    "paper": {"n": None, "n_train": 4000, "n_test": 2000, "steps": 400, "variants": list(VARIANTS)},
}


def gap_records(nets: dict, settings: dict, root=None, seed: int = 0, progress=None) -> list[dict]:
    """For each variant of ``settings["variants"]`` and for the released test split itself:
    the per-channel means, the two-set classifier's held-out accuracy against the released test
    images (the released row: against itself, split in two, as the chance reference is 0.5 by
    construction and not measured), and the accuracy of every network in ``nets``
    (``{"METHOD SEED": module}``). One record per (test set, network), with the set's
    ``classifier_acc`` and ``channel_mean`` repeated on each."""
    from .data import channel_stats

    rel_u8, xr, yr = released_test(root)
    out = []
    sets = {"released": (rel_u8, xr, yr, None)}
    for name in settings["variants"]:
        u8, y = build_variant("test", root, seed=seed, n=settings["n"], **VARIANTS[name])
        sets[name] = (u8, to_tensor_domain(u8, 28, 3), torch.from_numpy(np.asarray(y, np.int64)), VARIANTS[name])
    for name, (u8, x, y, factors) in sets.items():
        clf = None
        if factors is not None:
            clf = distinguishability(u8, rel_u8, n_train=settings["n_train"], n_test=settings["n_test"],
                                     steps=settings["steps"], seed=seed).accuracy
        mean, _ = channel_stats(u8)
        for r in score_networks(nets, {name: (x, y)}):
            method, net_seed = r["network"].rsplit(" ", 1)
            out.append({"test_set": name, "factors": factors or {}, "method": method, "seed": int(net_seed),
                        "accuracy": r["accuracy"], "classifier_acc": clf, "channel_mean": mean.round(4).tolist(),
                        "n": int(len(y))})
        if progress:
            progress(name)
    return out


def gap_table(records: list[dict]) -> pd.DataFrame:
    """One row per test set: the two-set classifier's accuracy against the released test split,
    each method's mean accuracy over its networks, and that mean minus the same networks' mean on
    the released test split (the gap a build leaves; 0: as hard as the released set)."""

    df = pd.DataFrame(records)
    acc = df.pivot_table(index="test_set", columns="method", values="accuracy", aggfunc="mean", sort=False)
    released = acc.loc["released"]
    table = pd.DataFrame({"classifier vs released": df.groupby("test_set", sort=False)["classifier_acc"].first()})
    for m in acc.columns:
        table[f"{m} accuracy"] = acc[m]
        table[f"{m} − released"] = acc[m] - released[m]
    return table.round(4)
