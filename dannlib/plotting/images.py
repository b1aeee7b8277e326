"""Image grids, MNIST-M's blend steps and build gap, channel histograms, 2-D embeddings of features."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .common import finish
from .toys import legend_below, scatter_domains

RGB = (("tab:red", "R"), ("tab:green", "G"), ("tab:blue", "B"))


def _show_image(ax, image, title=None):
    """A uint8 (H, W) grey or (H, W, 3) RGB image without ticks."""
    image = np.asarray(image)
    ax.imshow(image, **({"cmap": "gray", "vmin": 0, "vmax": 255} if image.ndim == 2 else {}), interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=9)


def plot_image_grid(rows: dict, *, n_cols: int = 10, title: str | None = None):
    """The first ``n_cols`` uint8 images of each row (name -> (N, H, W) or (N, H, W, 3)), rows labelled."""
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(0.9 * n_cols + 1.2, 0.9 * len(rows) + 0.6), squeeze=False)
    for ax_row, (name, images) in zip(axes, rows.items()):
        for ax, image in zip(ax_row, images):
            _show_image(ax, image)
        for ax in ax_row[len(images):]:
            ax.axis("off")
        ax_row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    return finish(fig, title)


def plot_blend_steps(steps: list, *, title: str = "MNIST-M, step by step: |patch - binarised digit|"):
    """A row per digit of ``dannlib.data.mnist_m_blend_steps``: digit, binarised, background and crop, patch, blend."""
    cols = {"digit": "MNIST digit", "binarised": "binarised (>127)", "background": "background + crop",
            "patch": "patch", "blend": "blend |patch - digit|"}
    fig, axes = plt.subplots(len(steps), len(cols), figsize=(2.3 * len(cols), 2.1 * len(steps)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.6, 1, 1]})
    for r, (row, s) in enumerate(zip(axes, steps)):
        for ax, (key, col) in zip(row, cols.items()):
            _show_image(ax, s[key], col if r == 0 else None)
        row[2].add_patch(plt.Rectangle((s["left"] - 0.5, s["top"] - 0.5), s["size"], s["size"], fill=False,
                                       edgecolor="red", linewidth=1.5))
        row[2].set_xlabel(f"background {s['background_index']}, crop at ({s['top']}, {s['left']})", fontsize=8)
        row[0].set_ylabel(f"digit {s['index']}", fontsize=9)
    return finish(fig, title)


def plot_channel_histograms(histograms: dict, *, title: str = "Pixel values per channel"):
    """A panel per data set (name -> counts (C, 256), ``dannlib.data.channel_histograms``), a line per channel."""
    fig, axes = plt.subplots(1, len(histograms), figsize=(4.4 * len(histograms), 3.2), squeeze=False, sharey=True)
    for ax, (name, counts) in zip(axes[0], histograms.items()):
        counts = np.asarray(counts, dtype=float)
        for c, (colour, label) in zip(counts, [("black", "grey")] if len(counts) == 1 else RGB):
            ax.plot(np.arange(256), c / c.sum(), color=colour, label=label, linewidth=1.0)
        ax.set(yscale="log", xlabel="pixel value", title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("fraction of pixels")
    return finish(fig, title)


def plot_embeddings(embeddings: dict, classes, domains, *, domain_names=("source", "target"),
                    title: str | None = None, axis_labels: dict | None = None):
    """A panel per 2-D embedding (title -> (N, 2)), colour = class (``classes (N,)``), marker = domain
    (``domains (N,)`` 0/1). ``axis_labels``: title -> (x label, y label)."""
    fig, axes = plt.subplots(1, len(embeddings), figsize=(4.6 * len(embeddings), 5.0), squeeze=False)
    for ax, (name, e) in zip(axes[0], embeddings.items()):
        scatter_domains(ax, e, classes, domains, s=7.0, lw=0.6, alpha=0.7)
        ax.set_title(name, fontsize=10)
        ax.set(xticks=[], yticks=[])
        if name in (axis_labels or {}):
            ax.set_xlabel(axis_labels[name][0], fontsize=9)
            ax.set_ylabel(axis_labels[name][1], fontsize=9)
    return legend_below(fig, classes, domain_names, title, bottom=0.75, ncol=6, anchor=None)


def plot_build_gap(records: list, *, title: str = "MNIST-M builds against the released test split"):
    """Notebook 02's factor figure (:func:`dann_study.mnist_m_gap.gap_records`): each network's accuracy per test
    set; the two-set classifier's held-out accuracy against the released images (0.5: indistinguishable)."""
    df = pd.DataFrame(records)
    sets, methods = list(dict.fromkeys(df["test_set"])), list(dict.fromkeys(df["method"]))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 0.45 * len(sets) + 1.6), sharey=True,
                                 gridspec_kw={"width_ratios": [2, 1]})
    y_of = {s: i for i, s in enumerate(sets)}
    for k, m in enumerate(methods):
        d = df[df["method"] == m]
        off = (k - (len(methods) - 1) / 2) * 0.25
        ax.scatter(d["accuracy"], d["test_set"].map(y_of) + off, s=14, color=f"C{k}", alpha=0.7, label=m)
        means = d.groupby("test_set", sort=False)["accuracy"].mean()
        ax.scatter(means.values, np.array([y_of[s] for s in means.index]) + off, marker="|", s=200, color=f"C{k}")
        ax.axvline(means["released"], color=f"C{k}", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(sets)), sets)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy of the stored networks (| = mean; dashed: on the released set)")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(methods), frameon=False, fontsize=8)
    shown = df.groupby("test_set", sort=False)["classifier_acc"].first().dropna()
    bx.barh([y_of[s] for s in shown.index], shown.values, color="grey")
    bx.axvline(0.5, color="black", linewidth=1)
    bx.set_xlim(0.4, 1.0)
    bx.set_xlabel("classifier: this set vs released (held out)")
    return finish(fig, title)
