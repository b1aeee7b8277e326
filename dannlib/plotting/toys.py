"""Figures of the 2-D toy problems: learned features (PCA) and decision boundaries, one row per
training mode."""
from __future__ import annotations

import matplotlib.pyplot as plt

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
