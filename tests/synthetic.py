"""Synthetic digits shared by the store tests: each class a bright bar on its own row (learnable
in a few steps), standing in for a digits pair where no real data should be read."""
from __future__ import annotations

import torch

from dannlib.training import Domain


def bars(n, seed, shift=0.0):
    """``n`` images (n, 1, 28, 28) and labels 0-9: class k is a bar on row 2 + 2k."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.2
    for i in range(n):
        x[i, 0, 2 + 2 * int(y[i]), 4:24] = 1.0
    return (x + shift).clamp(0, 1), y


def bars_data(data, data_root=None):
    """A stand-in for ``dannlib.store.load_data``: source, target (shifted) and test sets of bars."""
    xs, ys = bars(48, 0)
    xt, yt = bars(48, 1, 0.3)
    xte, yte = bars(40, 2, 0.3)
    return (Domain("src", xs, ys), Domain("tgt", xt, yt),
            {"source_test": Domain("src", xs[:40], ys[:40]), "target_test": Domain("tgt", xte, yte)})


def tiny_adda(monkeypatch):
    """Patch the store to train on bars and to count the trainings: returns ``(calls, data,
    settings)``, calls a list of ``(method, started from a pre-training)``, data a MNIST->USPS
    spec and settings a tiny ADDA budget for ``RunSpec.make``."""
    import dannlib.methods
    import dannlib.store as store_mod
    from dannlib.store import digits_data

    monkeypatch.setattr(store_mod, "load_data", bars_data)
    calls = []
    real_train = dannlib.methods.train

    def counting_train(method, *args, **kwargs):
        calls.append((method, kwargs.get("pretrained") is not None))
        return real_train(method, *args, **kwargs)

    monkeypatch.setattr(dannlib.methods, "train", counting_train)
    data = digits_data("mnist", "usps", n_source=48, n_target=48, n_test=40, channels=1)
    return calls, data, dict(pretrain_steps=4, steps=2, batch_size=8, eval_every=2, monitor_size=40)
