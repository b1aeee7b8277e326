"""How far our MNIST-M build is from the released one (notebook 02), and which construction factor moves it: builds
changing one factor at a time, a classifier telling two image sets apart, stored networks scored on each test set."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from dannlib.data import (DataNotFoundError, binarise_digits, blend_mnist_m, bsds500_train_dir, bsds500_train_files,
                          channel_stats, load_mnist, load_mnist_m_released, mnist_m_seed, to_tensor_domain)
from dannlib.data.mnist_m import _decode_jpg
from dannlib.training import accuracy
from dannlib.utils import check_choice, seeded


def build_variant(split: str = "test", root=None, *, backgrounds: str = "train", build_size: int = 28,
                  patch_scale: float = 1.0, threshold: int = 127, seed: int = 0,
                  n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-M ``split`` built with factors changed (``backgrounds``: the BSDS500 split "train", "test", "val" or
    "all"): uint8 (N, build_size, build_size, 3) and labels. The defaults give ``load_mnist_m(split, seed=seed)`` (for
    ``n`` None: a smaller ``n`` draws other crops than the first ``n`` images of the full build);
    otherwise each digit (resized to ``build_size``, binarised at ``threshold``) is blended, ``|patch - digit|``,
    with a uniform ``patch_scale`` times larger crop (shrunk to ``build_size``) of a uniformly drawn background."""
    check_choice("backgrounds", backgrounds, ("train", "test", "val", "all"))
    images_bg = []
    for s in ("train", "test", "val") if backgrounds == "all" else (backgrounds,):  # BSDS500/images/<s>/*.jpg
        if not (files := bsds500_train_files(root, s)):
            raise DataNotFoundError(f"BSDS500 {s} images (*.jpg)", [bsds500_train_dir(root, s)])
        images_bg += [_decode_jpg(f) for f in files]
    digits, labels = (a[:n] for a in load_mnist(split, root))
    if patch_scale == 1.0 and threshold == 127:
        return blend_mnist_m(digits, images_bg, mnist_m_seed(seed, split), build_size), labels
    rng, crop = np.random.default_rng(mnist_m_seed(seed, split)), int(round(build_size * patch_scale))
    patches = np.empty((len(digits), crop, crop, 3), np.uint8)
    for i, b in enumerate(rng.integers(0, len(images_bg), len(digits))):
        top, left = (rng.integers(0, d - crop + 1) for d in images_bg[b].shape[:2])
        patches[i] = images_bg[b][top:top + crop, left:left + crop]
    if patch_scale != 1.0:
        t = torch.from_numpy(patches).permute(0, 3, 1, 2).float()
        patches = F.interpolate(t, size=(build_size, build_size), mode="bilinear", align_corners=False,
                                antialias=True).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    mask = binarise_digits(digits, build_size, threshold)[..., None].astype(np.int16)
    return np.abs(patches.astype(np.int16) - mask).astype(np.uint8), labels


def distinguishability(a_uint8: np.ndarray, b_uint8: np.ndarray, *, size: int = 28, n_train: int = 4000,
                       n_test: int = 2000, steps: int = 600, seed: int = 0) -> float:
    """The held-out accuracy of a small CNN (2 conv layers) trained to tell images ``a`` (label 0) from ``b``
    (label 1), both brought to ``size`` px by ``to_tensor_domain``: ``n_train`` of each for training (Adam 1e-3,
    batch 64, ``steps`` steps), ``n_test`` others of each held out. 0.5: the sets cannot be told apart."""
    need = n_train + n_test
    if len(a_uint8) < need or len(b_uint8) < need:
        raise ValueError(f"need {need} images of each set (n_train + n_test), got {len(a_uint8)} and {len(b_uint8)}")
    rng = np.random.default_rng(seed)
    xa, xb = (to_tensor_domain(x[rng.permutation(len(x))[:need]], size, 3) for x in (a_uint8, b_uint8))
    xtr, ytr = torch.cat([xa[:n_train], xb[:n_train]]), torch.cat([torch.zeros(n_train), torch.ones(n_train)])
    xte, yte = torch.cat([xa[n_train:], xb[n_train:]]), torch.cat([torch.zeros(n_test), torch.ones(n_test)])
    with seeded(seed):
        net = nn.Sequential(nn.Conv2d(3, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5), nn.ReLU(),
                            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xtr), (64,), generator=g)
        loss = F.binary_cross_entropy_with_logits(net(xtr[idx])[:, 0], ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(xte[i:i + 512])[:, 0] for i in range(0, len(xte), 512)]) > 0
    return float((pred.float() == yte).float().mean())


#: The variants of notebook 02: one factor changed at a time from our build ("ours"), then combined with the one
#: that moved the classifier most (the 32 px build).
VARIANTS: dict[str, dict] = {
    "ours": {}, "backgrounds: BSDS500 test": {"backgrounds": "test"},
    "backgrounds: BSDS500 val": {"backgrounds": "val"}, "backgrounds: all 500": {"backgrounds": "all"},
    "built at 32 px": {"build_size": 32}, "32 px, patch x1.5": {"build_size": 32, "patch_scale": 1.5},
    "32 px, patch x2": {"build_size": 32, "patch_scale": 2.0},
    "32 px, threshold 64": {"build_size": 32, "threshold": 64},
}

#: Per profile: test digits per variant (None: all 10,000), the classifier's images per set and steps, the variants.
SETTINGS = {
    "smoke": {"n": 1500, "n_train": 500, "n_test": 250, "steps": 40, "variants": ["ours", "built at 32 px"]},
    "quick": {"n": None, "n_train": 4000, "n_test": 2000, "steps": 400, "variants": list(VARIANTS)},
}
SETTINGS["paper"] = SETTINGS["quick"]


def gap_records(nets: dict, settings: dict, root=None, seed: int = 0, progress=None) -> list[dict]:
    """A record per (test set, network in ``nets`` = ``{"METHOD SEED": module}``) for the released test split and
    each variant of ``settings["variants"]``: the network's accuracy, the set's per-channel means and two-set
    classifier's held-out accuracy against the released test images (None for the released row)."""
    rel_u8, rel_y = load_mnist_m_released("test", root)
    if settings["n"]:  # the same first digits as the variants (the released split keeps MNIST's test order)
        rel_u8, rel_y = rel_u8[:settings["n"]], rel_y[:settings["n"]]
    out = []
    for name in ["released", *settings["variants"]]:
        factors = None if name == "released" else VARIANTS[name]
        u8, y = (rel_u8, rel_y) if factors is None else build_variant("test", root, seed=seed, n=settings["n"],
                                                                          **factors)
        x, y = to_tensor_domain(u8, 28, 3), torch.from_numpy(np.asarray(y, np.int64))
        clf = None if factors is None else distinguishability(
            u8, rel_u8, n_train=settings["n_train"], n_test=settings["n_test"], steps=settings["steps"], seed=seed)
        mean = channel_stats(u8)[0].round(4).tolist()
        for label, net in nets.items():
            method, net_seed = label.rsplit(" ", 1)
            out.append({"test_set": name, "factors": factors or {}, "method": method, "seed": int(net_seed),
                        "accuracy": float(accuracy(net.eval(), x, y, 1024)), "classifier_acc": clf,
                        "channel_mean": mean, "n": int(len(y))})
        if progress:
            progress(name)
    return out


def gap_table(records: list[dict]) -> pd.DataFrame:
    """One row per test set: the classifier's accuracy against the released test split, each method's mean
    accuracy over its networks, and that minus their mean on the released test split (0: as hard as it)."""
    df = pd.DataFrame(records)
    acc = df.pivot_table(index="test_set", columns="method", values="accuracy", aggfunc="mean", sort=False)
    table = pd.DataFrame({"classifier vs released": df.groupby("test_set", sort=False)["classifier_acc"].first()})
    for m in acc.columns:
        table[f"{m} accuracy"], table[f"{m} − released"] = acc[m], acc[m] - acc.loc["released", m]
    return table.round(4)
