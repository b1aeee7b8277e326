"""Evaluation of trained networks: features ``G_f(x)``, the proxy A-distance and a domain probe on
them, 2-D embeddings (PCA, t-SNE), and on the toys the domain accuracy and the decision surface."""
from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from .utils import check_number, check_positive_int

#: scikit-learn's native code on one thread (all cores: 7x slower for a t-SNE of 300 points on the study's CPU)
_one_thread = functools.partial(threadpool_limits, limits=1)


@contextlib.contextmanager
def _eval_mode(net: torch.nn.Module):
    was_training = net.training
    try:
        yield net.eval()
    finally:
        net.train(was_training)


@torch.no_grad()
def features(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """``G_f(x)`` of a ``DANNNet`` (its ``features``, mean subtraction included) in eval mode, in
    batches of 256: ``x (N, C, H, W)`` -> float32 numpy ``(N, D)``."""
    with _eval_mode(net):
        out = [net.features(x[i:i + 256]).float().cpu() for i in range(0, len(x), 256)]
    return torch.cat(out).numpy()


def _as_2d(name: str, a) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"{name} must be (N, D) (or (N, ...), flattened), got shape {a.shape}")
    if len(a) < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {len(a)}")
    return a.reshape(len(a), -1).astype(np.float64)


#: the regularisation strengths the proxy A-distance tries, keeping the lowest held-out error (as Ganin et al. do)
PAD_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


def proxy_a_distance(fs, ft, seed: int = 0, C: float | tuple = PAD_C_GRID, max_iter: int = 2000) -> dict:
    """Proxy A-distance (Ben-David et al., NIPS 2006 / ML 2010) between features ``fs (Ns, D)`` and ``ft (Nt, D)``
    (numpy or torch; ``(N, ...)`` is flattened), as Ganin et al. (JMLR 2016, sec. 5.1.5) compute it: both are cut to
    ``n = min(Ns, Nt)`` random samples (``seed``) and split in halves; a linear classifier trained on the standardised
    first halves tells source (0) from target (1) for each regularisation strength in ``C`` (a number or a sequence),
    and ``err`` is the lowest error on the second halves. Theirs is a linear SVM; ours an L2-regularised logistic
    regression. Returns ``{"pad": 2 (1 - 2 err), "err", "C", "n_train", "n_test"}``: about 0 for domains a linear
    classifier cannot tell apart, 2 if separable."""
    from sklearn.linear_model import LogisticRegression

    fs, ft = _as_2d("fs", fs), _as_2d("ft", ft)
    if fs.shape[1] != ft.shape[1]:
        raise ValueError(f"fs and ft must have the same feature size, got {fs.shape[1]} and {ft.shape[1]}")
    grid = tuple(C) if isinstance(C, (tuple, list)) else (C,)
    for c in grid:
        check_number("C", c)
    rng = np.random.default_rng(int(seed))
    n = min(len(fs), len(ft))
    fs, ft = fs[rng.permutation(len(fs))[:n]], ft[rng.permutation(len(ft))[:n]]
    half = n // 2
    x_train, x_test = np.concatenate([fs[:half], ft[:half]]), np.concatenate([fs[half:], ft[half:]])
    y_train, y_test = np.r_[np.zeros(half), np.ones(half)], np.r_[np.zeros(n - half), np.ones(n - half)]
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    errors = {}
    with _one_thread():
        for c in grid:
            clf = LogisticRegression(C=c, max_iter=max_iter).fit((x_train - mean) / std, y_train)
            errors[c] = float(np.mean(clf.predict((x_test - mean) / std) != y_test))
    best = min(errors, key=errors.get)
    return {"pad": 2.0 * (1.0 - 2.0 * errors[best]), "err": errors[best], "C": best, "n_train": int(len(x_train)),
            "n_test": int(len(x_test))}


def domain_probe_accuracy(fs, ft, seed: int = 0) -> float:
    """Held-out accuracy of :func:`proxy_a_distance`'s linear domain probe on frozen features, at one regularisation
    strength (C = 1, no choice on the held-out half): 0.5 = no linear trace of the domain, 1.0 = separable (unlike
    the adversarial head's own accuracy)."""
    return 1.0 - proxy_a_distance(fs, ft, seed=seed, C=1.0)["err"]


def pca_explained(x, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """PCA (scikit-learn, exact SVD) of ``x (N, D)`` on its first ``n_components`` axes and the
    share of the variance each explains: ``((N, n_components), (n_components,))``."""
    from sklearn.decomposition import PCA

    x = _as_2d("x", x)
    with _one_thread():
        pca = PCA(n_components=n_components, svd_solver="full")
        return pca.fit_transform(x), pca.explained_variance_ratio_


def tsne_embed(x, seed: int = 0, perplexity: float = 30.0, pca_dims: int | None = 50) -> np.ndarray:
    """t-SNE (van der Maaten & Hinton 2008; scikit-learn, PCA init) of ``x (N, D)`` -> ``(N, 2)``, after
    a PCA to ``pca_dims`` dimensions (None: none); deterministic under ``seed``; ``perplexity`` < N."""
    from sklearn.manifold import TSNE

    x = _as_2d("x", x)
    if not 0 < perplexity < len(x):
        raise ValueError(f"perplexity must lie in (0, N = {len(x)}), got {perplexity}")
    if pca_dims is not None and pca_dims < x.shape[1] and pca_dims < len(x):
        x = pca_explained(x, pca_dims)[0]
    with _one_thread():
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=int(seed)).fit_transform(x)


@torch.no_grad()
def domain_accuracy(net: torch.nn.Module, xs: torch.Tensor, xt: torch.Tensor) -> float:
    """Accuracy (eval mode) of a ``DANNNet``'s ``G_d(G_f(x))`` at telling source ``xs (Ns, ...)`` (d = 0)
    from target ``xt (Nt, ...)`` (d = 1: logit > 0)."""
    x = torch.cat([xs, xt])
    with _eval_mode(net):
        target = net(x, 0.0)[1] > 0
    return float((target == (torch.arange(len(x), device=x.device) >= len(xs))).float().mean())


@torch.no_grad()
def decision_surface(net: torch.nn.Module, points, resolution: int = 150, margin: float = 0.5) -> dict:
    """The label predictor's probability of class 1 on a grid over ``points (N, 2)`` plus ``margin``:
    ``{"xx", "yy", "prob"}``, numpy ``(R, R)`` with ``R = resolution`` (the boundary: ``prob = 0.5``)."""
    resolution = check_positive_int("resolution", resolution)
    p = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must be (N, 2) inputs of a 2-D toy problem, got shape {p.shape}")
    lo, hi = p.min(0) - margin, p.max(0) + margin
    xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = torch.tensor(np.c_[xx.ravel(), yy.ravel()], dtype=torch.float32)
    with _eval_mode(net):
        prob = torch.softmax(net(grid.to(next(net.parameters()).device)), -1)[:, 1].cpu().numpy()
    return {"xx": xx, "yy": yy, "prob": prob.reshape(xx.shape)}
