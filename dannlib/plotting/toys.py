"""The 2-D toy problems (notebook 01) and per training mode the learned features beside the decision boundary.
Colour = class (tab10), marker = domain (source 'o', target 'x': its labels shown, never trained on)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .common import finish

MARKERS = ("o", "x")


def scatter_domains(ax, points, classes, domains, *, s: float = 8.0, lw: float = 0.7, alpha: float = 0.6):
    """``points (N, 2)`` coloured by ``classes (N,)``, marked by ``domains (N,)`` (0 source 'o', 1 target 'x')."""
    points, classes, domains = np.asarray(points), np.asarray(classes), np.asarray(domains)
    for d, marker in enumerate(MARKERS):
        sel = domains == d
        ax.scatter(points[sel, 0], points[sel, 1], color=plt.get_cmap("tab10")(classes[sel].astype(int) % 10),
                   marker=marker, s=s, linewidths=lw if marker == "x" else 0, alpha=alpha)


def legend_below(fig, classes, domain_names, title=None, *, bottom: float = 0.45, top: float = 0.0,
                 boundary: bool = False, ncol=None, anchor=(0.5, 0.0), **title_kw):
    """:func:`finish` ``fig`` with a legend of domains and classes in a strip ``bottom`` inches high below the
    panels (``top`` inches kept free above them)."""
    cmap = plt.get_cmap("tab10")
    handles = [plt.Line2D([], [], marker=m, linestyle="", color="grey", label=n) for m, n in zip(MARKERS, domain_names)]
    handles += [plt.Line2D([], [], marker="s", linestyle="", color=cmap(int(c) % 10), label=f"class {int(c)}")
                for c in np.unique(np.asarray(classes))]
    if boundary:
        handles.append(plt.Line2D([], [], color="k", linewidth=1.2, label="decision boundary (P(class 1) = 0.5)"))
    fig.legend(handles=handles, loc="lower center", ncol=ncol or len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=anchor)
    return finish(fig, title, (0, bottom / fig.get_figheight(), 1, 1 - top / fig.get_figheight()), **title_kw)


def _toy_points(ax, xs, ys, xt, yt):
    scatter_domains(ax, np.r_[xs, xt], np.r_[ys, yt], np.r_[np.zeros(len(xs)), np.ones(len(xt))])
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("input x1", fontsize=8)
    ax.set_ylabel("input x2", fontsize=8)
    ax.tick_params(labelsize=7)


def plot_toy_problems(problems: dict, *, title: str | None = None, domain_names=("source", "target")):
    """One panel per toy problem (name -> ``xs (N, 2)``, ``ys (N,)``, ``xt``, ``yt``, optional ``caption``)."""
    fig, axes = plt.subplots(1, len(problems), figsize=(4.6 * len(problems), 4.4), squeeze=False)
    for ax, (name, p) in zip(axes[0], problems.items()):
        _toy_points(ax, p["xs"], p["ys"], p["xt"], p["yt"])
        ax.set_title(name + (f"\n{p['caption']}" if p.get("caption") else ""), fontsize=9)
        ax.grid(alpha=0.3)
    return legend_below(fig, np.concatenate([np.asarray(p["ys"]) for p in problems.values()]), domain_names, title,
                        fontsize=10)


def plot_toy_modes(rows: dict, *, title: str | None = None, domain_names=("source", "target")):
    """A row per training mode (from :func:`toy_mode_rows`): the PCA of the features (``embedding (N, 2)``), and
    P(class 1) over the input plane (``surface`` of :func:`dannlib.evaluate.decision_surface`, 0.5 in black)."""
    fig, axes = plt.subplots(len(rows), 2, figsize=(9.0, 3.5 * len(rows) + 1.2), squeeze=False)
    for (ax, bx), (label, row) in zip(axes, rows.items()):
        scatter_domains(ax, row["embedding"], row["classes"], row["domains"])
        share = ["", ""] if row.get("variance") is None else [f" ({100 * v:.0f}% of variance)" for v in row["variance"]]
        ax.set_xlabel(f"feature PC 1{share[0]}", fontsize=8)
        ax.set_ylabel(f"feature PC 2{share[1]}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(label + (f": {row['caption']}" if row.get("caption") else ""), fontsize=9)
        surface, prob = row["surface"], np.asarray(row["surface"]["prob"])
        bx.contourf(surface["xx"], surface["yy"], surface["prob"], levels=np.linspace(0, 1, 11), cmap="RdBu_r",
                    alpha=0.25)
        if prob.min() < 0.5 < prob.max():  # no line where the predictor gives one class everywhere
            bx.contour(surface["xx"], surface["yy"], prob, levels=[0.5], colors="k", linewidths=1.2)
        _toy_points(bx, row["xs"], row["ys"], row["xt"], row["yt"])
        bx.set_title(f"{label}: decision boundary", fontsize=9)
    return legend_below(fig, np.concatenate([np.asarray(r["classes"]) for r in rows.values()]), domain_names,
                        title and title + "\nleft: PCA of the learned features G_f(x); right: the label predictor "
                        "over the input plane", top=0.1 if title else 0.0, boundary=True, fontsize=10)


def toy_mode_rows(runs, records, source, target, seed) -> dict:
    """:func:`plot_toy_modes`'s rows for one ``seed`` of a toy's ``runs`` (``(tags, StoredRun)``, mode
    ``tags["method"]``) and ``records``; the PCA is of the pooled ``source`` + ``target`` features."""
    import torch

    from ..evaluate import decision_surface, features, pca_explained

    by_key = {r["key"]: r for r in records}
    rows = {}
    for tags, run in [(t, r) for t, r in runs if r.spec.seed == seed]:
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
