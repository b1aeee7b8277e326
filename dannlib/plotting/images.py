"""Figures of images and embeddings: sample grids, MNIST-M's blend steps, channel histograms,
2-D embeddings of features coloured by class and marked by domain."""
from __future__ import annotations

import matplotlib.pyplot as plt

def _show_image(ax, image, title=None):
    """Show a uint8 (H, W) grey or (H, W, 3) RGB image without axes."""
    import numpy as np

    image = np.asarray(image)
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def plot_image_grid(rows: dict, *, n_cols: int = 10, title: str | None = None, cell: float = 0.9):
    """A grid of uint8 images, one labelled row per entry of ``rows`` (name -> array (N, H, W)
    or (N, H, W, 3)); the first ``n_cols`` images of each row. E.g. MNIST digits above the
    MNIST-M images built from them."""
    names = list(rows)
    fig, axes = plt.subplots(len(names), n_cols, figsize=(cell * n_cols + 1.2, cell * len(names) + 0.6),
                             squeeze=False)
    for r, name in enumerate(names):
        images = rows[name]
        for c in range(n_cols):
            ax = axes[r][c]
            if c < len(images):
                _show_image(ax, images[c])
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_blend_steps(steps: list, *, title: str = "MNIST-M, step by step: |patch - binarised digit|"):
    """One row per digit, from ``dannlib.data.mnist_m_blend_steps``: the MNIST digit, the
    binarised digit, the chosen BSDS500 background with the crop drawn, the patch, the blend."""
    from matplotlib.patches import Rectangle

    cols = ["MNIST digit", "binarised (>127)", "background + crop", "patch", "blend |patch - digit|"]
    fig, axes = plt.subplots(len(steps), len(cols), figsize=(2.3 * len(cols), 2.1 * len(steps)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.6, 1, 1]})
    for r, s in enumerate(steps):
        row = axes[r]
        _show_image(row[0], s["digit"], cols[0] if r == 0 else None)
        _show_image(row[1], s["binarised"], cols[1] if r == 0 else None)
        _show_image(row[2], s["background"], cols[2] if r == 0 else None)
        row[2].add_patch(Rectangle((s["left"] - 0.5, s["top"] - 0.5), s["size"], s["size"],
                                   fill=False, edgecolor="red", linewidth=1.5))
        row[2].set_xlabel(f"background {s['background_index']}, crop at ({s['top']}, {s['left']})", fontsize=8)
        _show_image(row[3], s["patch"], cols[3] if r == 0 else None)
        _show_image(row[4], s["blend"], cols[4] if r == 0 else None)
        row[0].set_ylabel(f"digit {s['index']}", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_channel_histograms(histograms: dict, *, title: str = "Pixel values per channel", density: bool = True):
    """One panel per data set (name -> int counts (C, 256), e.g. from
    ``dannlib.data.channel_histograms``): a line per channel over pixel values 0-255
    (grey for one channel, red/green/blue for three). Log-scaled y axis."""
    import numpy as np

    names = list(histograms)
    fig, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.2), squeeze=False, sharey=True)
    values = np.arange(256)
    for ax, name in zip(axes[0], names):
        counts = np.asarray(histograms[name], dtype=float)
        colours = ["black"] if len(counts) == 1 else ["tab:red", "tab:green", "tab:blue"][: len(counts)]
        labels = ["grey"] if len(counts) == 1 else ["R", "G", "B"][: len(counts)]
        for c, (colour, label) in enumerate(zip(colours, labels)):
            y = counts[c] / counts[c].sum() if density else counts[c]
            ax.plot(values, y, color=colour, label=label, linewidth=1.0)
        ax.set_yscale("log")
        ax.set_xlabel("pixel value")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("fraction of pixels" if density else "pixels")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_embeddings(embeddings: dict, classes, domains, *, domain_names=("source", "target"),
                    title: str | None = None, point_size: float = 7.0, axis_labels: dict | None = None):
    """One panel per 2-D embedding (``embeddings``: title -> array (N, 2), e.g. t-SNE or
    PCA of learned features), points coloured by class (``classes``: (N,) ints, tab10) and
    marked by domain (``domains``: (N,) 0/1; circles for ``domain_names[0]``, crosses for
    ``domain_names[1]``). ``axis_labels``: title -> (x label, y label), e.g. each principal
    axis with its share of the variance. The legend sits under the panels, clear of the points."""
    import numpy as np
    from matplotlib.lines import Line2D

    classes, domains = np.asarray(classes), np.asarray(domains)
    names = list(embeddings)
    axis_labels = axis_labels or {}
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 5.0), squeeze=False)
    cmap = plt.get_cmap("tab10")
    markers = ("o", "x")
    for ax, name in zip(axes[0], names):
        e = np.asarray(embeddings[name])
        for d, marker in enumerate(markers):
            sel = domains == d
            ax.scatter(e[sel, 0], e[sel, 1], c=cmap(classes[sel] % 10), marker=marker, s=point_size,
                       linewidths=0.6 if marker == "x" else 0, alpha=0.7)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if name in axis_labels:
            ax.set_xlabel(axis_labels[name][0], fontsize=9)
            ax.set_ylabel(axis_labels[name][1], fontsize=9)
    handles = [Line2D([], [], marker=m, linestyle="", color="grey", label=n) for m, n in zip(markers, domain_names)]
    handles += [Line2D([], [], marker="s", linestyle="", color=cmap(c), label=f"class {c}")
                for c in sorted(set(classes.tolist()))]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.75 / fig.get_figheight(), 1, 1))
    return fig


def plot_build_gap(records: list, *, title: str = "MNIST-M builds against the released test split"):
    """Notebook 02's factor figure from :func:`dannlib.mnist_m_gap.gap_records`: left, each
    network's accuracy on each test set (one point per network, methods side by side, the
    released set's means as dashed lines); right, the two-set classifier's held-out accuracy
    against the released images (0.5: indistinguishable)."""
    import numpy as np
    import pandas as pd

    df = pd.DataFrame(records)
    sets = list(dict.fromkeys(df["test_set"]))
    methods = list(dict.fromkeys(df["method"]))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 0.45 * len(sets) + 1.6), sharey=True,
                                 gridspec_kw={"width_ratios": [2, 1]})
    y_of = {s: i for i, s in enumerate(sets)}
    for k, m in enumerate(methods):
        d = df[df["method"] == m]
        off = (k - (len(methods) - 1) / 2) * 0.25
        color = f"C{k}"
        ax.scatter(d["accuracy"], d["test_set"].map(y_of) + off, s=14, color=color, alpha=0.7, label=m)
        means = d.groupby("test_set", sort=False)["accuracy"].mean()
        ax.scatter(means.values, np.array([y_of[s] for s in means.index]) + off, marker="|", s=200, color=color)
        ax.axvline(means["released"], color=color, linestyle="--", linewidth=1)
    ax.set_yticks(range(len(sets)), sets)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy of the stored networks (| = mean; dashed: on the released set)")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(methods), frameon=False, fontsize=8)
    clf = df.groupby("test_set", sort=False)["classifier_acc"].first()
    shown = clf.dropna()
    bx.barh([y_of[s] for s in shown.index], shown.values, color="grey")
    bx.axvline(0.5, color="black", linewidth=1)
    bx.set_xlim(0.4, 1.0)
    bx.set_xlabel("classifier: this set vs released (held out)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
