"""Plotting helpers. Each returns a matplotlib Figure; ``save_figure`` writes it.

No ``matplotlib.use`` at import: the notebook or the regeneration command picks the backend.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .utils import atomic_path

FIGURE_FORMATS = ("png", "svg")


def save_figure(fig, figures_dir, notebook: str, name: str, *, dpi: int = 110, formats=FIGURE_FORMATS) -> list[Path]:
    """Write ``fig`` as ``figures_dir/notebook/name.{png,svg}`` (deterministic names),
    each file written to a temporary name and renamed, so a failure leaves the previous
    figure intact. Returns the written paths."""
    out = []
    for ext in formats:
        path = Path(figures_dir) / notebook / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            kwargs = {"dpi": dpi} if ext == "png" else {"metadata": {"Date": None}} if ext == "svg" else {}
            fig.savefig(tmp, format=ext, bbox_inches="tight", **kwargs)
        out.append(path)
    return out


def plot_schedules(progress, series: dict, *, title: str = "Schedules against training progress p"):
    """One panel per named series (e.g. ``{"lambda_p (eq. 6)": ..., "mu_p (eq. 7)": ...}``)."""
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.2))
    axes = [axes] if len(series) == 1 else list(axes)
    for ax, (name, values) in zip(axes, series.items()):
        ax.plot(progress, values)
        ax.set_xlabel("training progress p")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


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
