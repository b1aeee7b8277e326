"""Figures of the 2-D toy problems (notebook 01): the problems themselves, and per training mode
the learned features (PCA) beside the decision boundary over the input plane.

Conventions of every panel: colour = class (tab10), marker = domain (source 'o', target 'x');
target labels are drawn for reading the plots only (training never sees them). Legends are
figure legends below the panels, so they never cover points.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

DOMAIN_MARKERS = ("o", "x")


def _legend_handles(classes, domain_names=("source", "target"), boundary: bool = False):
    import numpy as np
    from matplotlib.lines import Line2D

    cmap = plt.get_cmap("tab10")
    handles = [Line2D([], [], marker=m, linestyle="", color="grey", label=n) for m, n in zip(DOMAIN_MARKERS, domain_names)]
    handles += [Line2D([], [], marker="s", linestyle="", color=cmap(int(c) % 10), label=f"class {int(c)}")
                for c in np.unique(np.asarray(classes))]
    if boundary:
        handles.append(Line2D([], [], color="k", linewidth=1.2, label="decision boundary (P(class 1) = 0.5)"))
    return handles


def _figure_legend(fig, handles, bottom_inches: float = 0.45, top_inches: float = 0.0):
    """A one-row legend under the panels, in a strip ``bottom_inches`` high kept free of axes,
    and a strip ``top_inches`` high kept free above them for the figure's title."""
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    h = fig.get_figheight()
    fig.tight_layout(rect=(0, bottom_inches / h, 1, 1 - top_inches / h))


def draw_toy_points(ax, xs, ys, xt, yt, *, point_size: float = 8.0):
    """Source ``xs (Ns, 2)`` ('o') and target ``xt (Nt, 2)`` ('x') points over the input
    plane, coloured by their class ``ys``/``yt``; axes labelled x1, x2, equal aspect."""
    import numpy as np

    cmap = plt.get_cmap("tab10")
    for x, y, marker in ((xs, ys, "o"), (xt, yt, "x")):
        x, y = np.asarray(x), np.asarray(y)
        ax.scatter(x[:, 0], x[:, 1], color=cmap(y % 10), marker=marker, s=point_size,
                   linewidths=0.7 if marker == "x" else 0, alpha=0.6)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("input x1", fontsize=8)
    ax.set_ylabel("input x2", fontsize=8)
    ax.tick_params(labelsize=7)


def plot_toy_problems(problems: dict, *, title: str | None = None, domain_names=("source", "target")):
    """One panel per toy problem (``problems``: name -> dict with ``xs (N, 2)``, ``ys (N,)``,
    ``xt (N, 2)``, ``yt (N,)`` and optionally ``caption``), the source and target points
    over the input plane."""
    import numpy as np

    names = list(problems)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        p = problems[name]
        draw_toy_points(ax, p["xs"], p["ys"], p["xt"], p["yt"])
        ax.set_title(name + (f"\n{p['caption']}" if p.get("caption") else ""), fontsize=9)
        ax.grid(alpha=0.3)
    classes = np.concatenate([np.asarray(problems[n]["ys"]) for n in names])
    if title:
        fig.suptitle(title, fontsize=10)
    _figure_legend(fig, _legend_handles(classes, domain_names))
    return fig


def draw_feature_pca(ax, embedding, classes, domains, *, title: str | None = None, point_size: float = 8.0,
                     variance=None):
    """Draw a 2-D embedding of learned features (``embedding (N, 2)``, e.g. the PCA of the
    pooled source + target features from :func:`dannlib.evaluate.pca_explained`) on ``ax``:
    colour = class (``classes (N,)``), marker = domain (``domains (N,)``: 0 source 'o',
    1 target 'x'). ``variance``: each axis's share of the variance, written on the axis."""
    import numpy as np

    e, classes, domains = np.asarray(embedding), np.asarray(classes), np.asarray(domains)
    cmap = plt.get_cmap("tab10")
    for d, marker in enumerate(DOMAIN_MARKERS):
        sel = domains == d
        ax.scatter(e[sel, 0], e[sel, 1], color=cmap(classes[sel].astype(int) % 10), marker=marker, s=point_size,
                   linewidths=0.7 if marker == "x" else 0, alpha=0.6)
    share = [f" ({100 * v:.0f}% of variance)" for v in variance] if variance is not None else ["", ""]
    ax.set_xlabel(f"feature PC 1{share[0]}", fontsize=8)
    ax.set_ylabel(f"feature PC 2{share[1]}", fontsize=8)
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

    ax.contourf(surface["xx"], surface["yy"], surface["prob"], levels=np.linspace(0, 1, 11), cmap="RdBu_r",
                alpha=0.25)
    prob = np.asarray(surface["prob"])
    if prob.min() < 0.5 < prob.max():  # no line where the predictor gives one class everywhere
        ax.contour(surface["xx"], surface["yy"], prob, levels=[0.5], colors="k", linewidths=1.2)
    draw_toy_points(ax, xs, ys, xt, yt, point_size=point_size)
    if title:
        ax.set_title(title, fontsize=9)


def plot_toy_modes(rows: dict, *, title: str | None = None, domain_names=("source", "target")):
    """One row per training mode, two panels each: left the PCA of the learned features,
    right the decision boundary over the input plane (shading: the predicted probability of
    class 1, blue 0 to red 1). The columns are named once, above the first row; each row's
    left panel is titled with its mode and ``caption``.

    ``rows``: label -> dict with ``embedding (N, 2)``, ``classes (N,)``, ``domains (N,)``
    and optionally ``variance`` (for the left panel), ``surface``, ``xs``, ``ys``, ``xt``,
    ``yt`` (right panel), and optionally ``caption`` (e.g. the accuracies); see
    :func:`toy_mode_rows`."""
    import numpy as np

    labels = list(rows)
    fig, axes = plt.subplots(len(labels), 2, figsize=(9.0, 3.5 * len(labels) + 1.2), squeeze=False)
    for r, label in enumerate(labels):
        row = rows[label]
        caption = f": {row['caption']}" if row.get("caption") else ""
        draw_feature_pca(axes[r][0], row["embedding"], row["classes"], row["domains"],
                         title=f"{label}{caption}", variance=row.get("variance"))
        draw_decision_boundary(axes[r][1], row["surface"], row["xs"], row["ys"], row["xt"], row["yt"],
                               title=f"{label}: decision boundary")
    classes = np.concatenate([np.asarray(rows[k]["classes"]) for k in labels])
    if title:
        fig.suptitle(title + "\nleft: PCA of the learned features G_f(x); right: the label predictor over the "
                     "input plane", fontsize=10)
    _figure_legend(fig, _legend_handles(classes, domain_names, boundary=True), top_inches=0.1 if title else 0.0)
    return fig


def toy_mode_rows(runs, records, source, target, seed) -> dict:
    """The rows of :func:`plot_toy_modes` for one seed of one toy: ``runs`` are the stored
    runs of that toy (``(tags, StoredRun)`` pairs, ``tags["method"]`` the mode), ``records``
    their records (``key`` -> accuracies), ``source``/``target`` the toy's Domains (``x
    (N, 2)``, ``y (N,)``). The PCA is of the pooled source + target features, with each
    axis's share of the variance."""
    import numpy as np
    import torch

    from ..evaluate import decision_surface, features, pca_explained

    by_key = {r["key"]: r for r in records}
    rows = {}
    for tags, run in runs:
        if run.spec.seed != seed:
            continue
        net = run.load_modules()["net"]
        embedding, variance = pca_explained(np.concatenate([features(net, source.x), features(net, target.x)]))
        rec = by_key[run.spec.key]
        rows[tags["method"]] = {
            "embedding": embedding, "variance": variance,
            "classes": np.r_[source.y.numpy(), target.y.numpy()],
            "domains": np.r_[np.zeros(len(source.x)), np.ones(len(target.x))],
            "surface": decision_surface(net, torch.cat([source.x, target.x])),
            "xs": source.x.numpy(), "ys": source.y.numpy(), "xt": target.x.numpy(), "yt": target.y.numpy(),
            "caption": f"target acc {rec['target_acc']:.2f}, domain probe {rec['domain_probe_acc']:.2f}"}
    return rows
