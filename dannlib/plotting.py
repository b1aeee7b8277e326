"""Plotting helpers. Each returns a matplotlib Figure; ``save_figure`` writes it.

No ``matplotlib.use`` at import: the notebook or the regeneration command picks the backend.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .utils import atomic_path

FIGURE_FORMATS = ("png", "svg")
# Fixed so that the same figure gives the same bytes on every run (matplotlib otherwise
# salts the SVG element ids at random); saved with no date or software version either.
SVG_HASHSALT = "dannlib"
_FIGURE_METADATA = {"svg": {"Date": None, "Creator": None}, "png": {"Software": None}, "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}


def save_figure(fig, figures_dir, notebook: str, name: str, *, dpi: int = 110, formats=FIGURE_FORMATS) -> list[Path]:
    """Write ``fig`` as ``figures_dir/notebook/name.{png,svg}`` (deterministic names),
    each file written to a temporary name and renamed, so a failure leaves the previous
    figure intact. The bytes are reproducible: the same figure saves identically every
    time (fixed ``svg.hashsalt``, no dates or version strings in the metadata). Returns
    the written paths."""
    import matplotlib

    out = []
    for ext in formats:
        path = Path(figures_dir) / notebook / f"{name}.{ext}"
        kwargs = {"dpi": dpi} if ext == "png" else {}
        if ext in _FIGURE_METADATA:
            kwargs["metadata"] = dict(_FIGURE_METADATA[ext])
        with atomic_path(path) as tmp, matplotlib.rc_context({"svg.hashsalt": SVG_HASHSALT}):
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


def plot_method_curves(histories: dict, keys, *, x: str = "step", title: str | None = None,
                       labels: dict | None = None):
    """Training curves of several methods, one panel per key in ``keys``: for each method
    (``histories``: name -> history records, e.g. ``RunResult.history`` of all its seeds,
    dicts with ``seed``, ``x`` and the keys) the mean over seeds against ``x`` with a
    mean ± std band. A method lacking a key is left out of that panel. ``labels`` renames
    panels (key -> title)."""
    import numpy as np
    import pandas as pd

    keys = list(keys)
    labels = labels or {}
    fig, axes = plt.subplots(1, len(keys), figsize=(3.9 * len(keys), 3.3), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for m_i, (name, hist) in enumerate(histories.items()):
        df = pd.DataFrame(hist)
        for ax, key in zip(axes[0], keys):
            if key not in df or df[key].isna().all():
                continue
            g = df.groupby(x)[key].agg(["mean", "std", "count"]).reset_index()
            std = g["std"].fillna(0.0).to_numpy()
            mean = g["mean"].to_numpy()
            colour = colours[m_i % len(colours)]
            n = int(df["seed"].nunique()) if "seed" in df else 1
            ax.plot(g[x], mean, color=colour, label=f"{name} ({n} seed{'s' if n != 1 else ''})")
            ax.fill_between(g[x], mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    for ax, key in zip(axes[0], keys):
        ax.set_title(labels.get(key, key), fontsize=10)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    handles, names = [], []
    for ax in axes[0]:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_embeddings(embeddings: dict, classes, domains, *, domain_names=("source", "target"),
                    title: str | None = None, point_size: float = 7.0):
    """One panel per 2-D embedding (``embeddings``: title -> array (N, 2), e.g. t-SNE or
    PCA of learned features), points coloured by class (``classes``: (N,) ints, tab10) and
    marked by domain (``domains``: (N,) 0/1; circles for ``domain_names[0]``, crosses for
    ``domain_names[1]``)."""
    import numpy as np
    from matplotlib.lines import Line2D

    classes, domains = np.asarray(classes), np.asarray(domains)
    names = list(embeddings)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.4), squeeze=False)
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
    handles = [Line2D([], [], marker=m, linestyle="", color="grey", label=n) for m, n in zip(markers, domain_names)]
    handles += [Line2D([], [], marker="s", linestyle="", color=cmap(c), label=str(c)) for c in sorted(set(classes.tolist()))]
    fig.legend(handles=handles, loc="center right", fontsize=8, title="domain / class")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    return fig


def plot_seed_points(records: list, metric: str, *, x: str = "method", hue: str | None = None, order=None,
                     hue_order=None, ylabel: str | None = None, title: str | None = None, reference: dict | None = None):
    """Every seed as a point (seaborn strip plot) with the mean ± one standard deviation over
    seeds beside it (point plot), one column per value of ``x`` (in ``order``), coloured by
    ``hue`` (e.g. the domain pair). Only runs with status "ok" are drawn; the count of seeds
    (and of failed runs) is written under each column. The y axis is scaled to the data, so a
    difference of a few points is visible. ``reference``: horizontal lines (label -> y), e.g.
    published numbers."""
    import numpy as np
    import pandas as pd
    import seaborn as sns

    from .results import aggregate

    df = pd.DataFrame([r for r in records if r.get("status", "ok") == "ok" and r.get(metric) is not None])
    order = list(order) if order is not None else list(dict.fromkeys(r[x] for r in records))
    hue_order = list(hue_order) if hue_order is not None else (
        list(dict.fromkeys(r[hue] for r in records)) if hue else None)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(order) * (len(hue_order) if hue else 1) + 2.0), 3.8))
    kw = dict(data=df, x=x, y=metric, order=order, hue=hue, hue_order=hue_order, ax=ax)
    sns.stripplot(**kw, dodge=bool(hue), alpha=0.55, size=5, jitter=0.15, legend=False)
    sns.pointplot(**kw, dodge=0.4 if hue else False, errorbar="sd", capsize=0.15, linestyle="none",
                  markers="D", markersize=5, err_kws={"linewidth": 1.4})
    counts = {(g[x], g.get(hue)): g for g in aggregate(records, metric, [x] + ([hue] if hue else []))}
    labels = []
    for name in order:
        parts = [f"{counts[(name, h)]['n']}" + (f"+{counts[(name, h)]['failed']}✗" if counts[(name, h)]["failed"] else "")
                 for h in (hue_order or [None]) if (name, h) in counts]
        labels.append(f"{name}\n(n={'/'.join(parts)})")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
    ax.set_xlabel("")
    for label, y in (reference or {}).items():
        ax.axhline(y, color="grey", linestyle="--", linewidth=1)
        ax.annotate(label, (1.0, y), xycoords=("axes fraction", "data"), xytext=(3, 0), textcoords="offset points",
                    fontsize=7, color="grey", va="center")
    ax.set_ylabel(ylabel or metric)
    ax.grid(axis="y", alpha=0.3)
    if hue:
        ax.legend(title=hue, fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_paired_differences(diffs: list, *, by: str = "method", baseline: str = "", title: str | None = None,
                            ylabel: str | None = None):
    """Per-seed paired differences against a baseline (``dannlib.results.paired_differences``
    rows): each seed as a point, the mean ± std beside it, a zero line; one column per variant
    (and per group, side by side, when rows carry a group)."""
    import numpy as np

    groups = list(dict.fromkeys(d.get("group") for d in diffs))
    names = list(dict.fromkeys(d[by] for d in diffs))
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.8 * len(names) * len(groups) + 2.0), 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for g_i, g in enumerate(groups):
        for n_i, name in enumerate(names):
            row = next((d for d in diffs if d[by] == name and d.get("group") == g), None)
            if row is None or not row["diffs"]:
                continue
            x = n_i + (g_i - (len(groups) - 1) / 2) * width
            ax.scatter(np.full(len(row["diffs"]), x - width * 0.15), row["diffs"], s=16, alpha=0.6,
                       color=colours[g_i % len(colours)], label=str(g) if n_i == 0 and g is not None else None)
            if row["n"] > 1:
                ax.errorbar([x + width * 0.15], [row["mean"]], yerr=[row["std"]], fmt="D", ms=5, capsize=3,
                            color=colours[g_i % len(colours)])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(ylabel or f"difference to {baseline}, per seed")
    ax.grid(axis="y", alpha=0.3)
    if any(g is not None for g in groups):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# -- toy problems: learned features and decision boundaries, one row per training mode ----

def _domain_legend(ax, classes, domain_names=("source", "target")):
    import numpy as np
    from matplotlib.lines import Line2D

    cmap = plt.get_cmap("tab10")
    handles = [Line2D([], [], marker=m, linestyle="", color="grey", label=n) for m, n in zip("ox", domain_names)]
    handles += [Line2D([], [], marker="s", linestyle="", color=cmap(int(c) % 10), label=f"class {int(c)}")
                for c in np.unique(classes)]
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.7)


def draw_feature_pca(ax, embedding, classes, domains, *, title: str | None = None, point_size: float = 8.0):
    """Draw a 2-D embedding of learned features (``embedding (N, 2)``, e.g. the PCA of the
    pooled source + target features from :func:`dannlib.evaluate.pca_embed`) on ``ax``:
    colour = class (``classes (N,)``), marker = domain (``domains (N,)``: 0 source 'o',
    1 target 'x')."""
    import numpy as np

    e, classes, domains = np.asarray(embedding), np.asarray(classes), np.asarray(domains)
    cmap = plt.get_cmap("tab10")
    for d, marker in enumerate("ox"):
        sel = domains == d
        ax.scatter(e[sel, 0], e[sel, 1], color=cmap(classes[sel] % 10), marker=marker, s=point_size,
                   linewidths=0.7 if marker == "x" else 0, alpha=0.6)
    ax.set_xlabel("PC 1", fontsize=8)
    ax.set_ylabel("PC 2", fontsize=8)
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)


def draw_decision_boundary(ax, surface: dict, xs, ys, xt, yt, *, title: str | None = None,
                           point_size: float = 8.0):
    """Draw the class-1 probability over the input plane (``surface`` from
    :func:`dannlib.evaluate.decision_surface`), its 0.5 level as a black line (the decision
    boundary), and the source ``xs (Ns, 2)`` ('o') and target ``xt (Nt, 2)`` ('x') points
    coloured by their true class (target labels for display only)."""
    import numpy as np

    cmap = plt.get_cmap("tab10")
    ax.contourf(surface["xx"], surface["yy"], surface["prob"], levels=np.linspace(0, 1, 11), cmap="RdBu_r",
                alpha=0.25)
    ax.contour(surface["xx"], surface["yy"], surface["prob"], levels=[0.5], colors="k", linewidths=1.2)
    for x, y, marker in ((xs, ys, "o"), (xt, yt, "x")):
        x, y = np.asarray(x), np.asarray(y)
        ax.scatter(x[:, 0], x[:, 1], color=cmap(y % 10), marker=marker, s=point_size,
                   linewidths=0.7 if marker == "x" else 0, alpha=0.6)
    ax.set_aspect("equal", adjustable="box")
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)


def plot_toy_modes(rows: dict, *, title: str | None = None, domain_names=("source", "target")):
    """One row per training mode, two panels each: left the PCA of the learned features,
    right the decision boundary over the input plane.

    ``rows``: label -> dict with ``embedding (N, 2)``, ``classes (N,)``, ``domains (N,)``
    (for the left panel) and ``surface``, ``xs``, ``ys``, ``xt``, ``yt`` (right panel), and
    optionally ``caption`` (text added to both panel titles, e.g. the accuracies)."""
    labels = list(rows)
    fig, axes = plt.subplots(len(labels), 2, figsize=(9.0, 3.6 * len(labels)), squeeze=False)
    for r, label in enumerate(labels):
        row = rows[label]
        caption = f"\n{row['caption']}" if row.get("caption") else ""
        draw_feature_pca(axes[r][0], row["embedding"], row["classes"], row["domains"],
                         title=f"{label}: features G_f(x), PCA{caption}")
        draw_decision_boundary(axes[r][1], row["surface"], row["xs"], row["ys"], row["xt"], row["yt"],
                               title=f"{label}: decision boundary{caption}")
    _domain_legend(axes[0][0], row["classes"], domain_names)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
