"""Plotting helpers. Each returns a matplotlib Figure; ``save_figure`` writes it.

No ``matplotlib.use`` at import: the notebook or the regeneration command picks the backend.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..utils import atomic_path

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
    the written paths. A name is made file-friendly: runs of spaces, parentheses and other
    characters outside ``[A-Za-z0-9._-]`` become one underscore (e.g. a pair's label)."""
    import re

    import matplotlib

    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
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


def plot_method_curves(histories: dict, keys, *, x: str = "step", title: str | None = None,
                       labels: dict | None = None):
    """Training curves of several methods, one panel per key in ``keys``: for each method
    (``histories``: name -> history records, e.g. ``RunResult.history`` of all its seeds,
    dicts with ``seed``, ``x`` and the keys) the mean over seeds against ``x`` with a
    mean ± std band (:func:`dannlib.results.mean_curve`: seeds that did not end "ok" are left
    out, as in the tables). A method lacking a key is left out of that panel. ``labels`` renames
    panels (key -> title)."""
    from ..results import mean_curve, runs_of

    keys = list(keys)
    labels = labels or {}
    fig, axes = plt.subplots(1, len(keys), figsize=(max(6.5, 3.9 * len(keys)), 3.3 if len(keys) > 1 else 4.0),
                             squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for m_i, (name, hist) in enumerate(histories.items()):
        runs = runs_of(hist)
        for ax, key in zip(axes[0], keys):
            g = mean_curve(runs, key, x=x)
            if not g["x"]:
                continue
            std = np.nan_to_num(np.asarray(g["std"]), nan=0.0)
            mean = np.asarray(g["mean"])
            colour = colours[m_i % len(colours)]
            n = len([r for r in runs if r[-1].get("status", "ok") == "ok"])
            ax.plot(g["x"], mean, color=colour, label=f"{name} ({n} seed{'s' if n != 1 else ''})")
            ax.fill_between(g["x"], mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
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


def plot_seed_points(records: list, metric: str, *, x: str = "method", hue: str | None = None, order=None,
                     hue_order=None, ylabel: str | None = None, title: str | None = None, reference: dict | None = None,
                     ylim: tuple | None = None):
    """Every seed as a point (seaborn strip plot) with the **median and interquartile range**
    over seeds beside it (a diamond and a bar), one column per value of ``x`` (in ``order``),
    coloured by ``hue`` (e.g. the domain pair). Median and IQR, not mean ± sd: a spread that
    is bimodal (most seeds at one level, a few at another) gets no bar reaching values no
    seed took. Only runs with status "ok" are drawn; the count of seeds (and of failed runs)
    is written under each column. The y axis is scaled to the data unless ``ylim`` is given
    (e.g. a quantity's whole range). ``reference``: horizontal lines (label -> y), e.g.
    published numbers, labelled at the right edge."""
    import numpy as np
    import pandas as pd
    import seaborn as sns

    from ..results import aggregate

    df = pd.DataFrame([r for r in records if r.get("status", "ok") == "ok" and r.get(metric) is not None])
    order = list(order) if order is not None else list(dict.fromkeys(r[x] for r in records))
    hue_order = list(hue_order) if hue_order is not None else (
        list(dict.fromkeys(r[hue] for r in records)) if hue else None)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(order) * (len(hue_order) if hue else 1) + 2.0), 3.8))
    kw = dict(data=df, x=x, y=metric, order=order, hue=hue, hue_order=hue_order, ax=ax)
    dodge = bool(hue) and len(hue_order) > 1  # seaborn divides by (levels - 1): one level cannot dodge
    # seaborn jitters with numpy's global generator: seed it for this call (and restore it), so
    # the same records always give the same figure file
    state = np.random.get_state()
    try:
        np.random.seed(0)
        sns.stripplot(**kw, dodge=dodge, alpha=0.55, size=5, jitter=0.15, legend=False)
    finally:
        np.random.set_state(state)
    sns.pointplot(**kw, estimator="median", errorbar=("pi", 50), dodge=0.4 if dodge else False, capsize=0.15,
                  linestyle="none", markers="D", markersize=5, err_kws={"linewidth": 1.4})
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
    ax.set_ylabel((ylabel or metric) + "\n(points: seeds; ◆ and bar: median, IQR)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if hue:  # under the axes: clear of the points and of the reference lines' labels at the right
        ax.legend(title=hue, fontsize=8, title_fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.32),
                  ncol=len(hue_order), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_paired_differences(diffs: list, *, by: str = "method", baseline: str = "", title: str | None = None,
                            ylabel: str | None = None):
    """Per-seed paired differences against a baseline (``dannlib.results.paired_differences``
    rows): each seed as a point, the mean difference with its 95% paired t-interval beside it
    (:func:`dannlib.stats.paired`, the interval every verdict rests on), a zero line; one column
    per variant (and per group, side by side, when rows carry a group)."""
    import numpy as np

    from ..stats import paired

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
                c = paired(dict(enumerate(row["diffs"])), {i: 0.0 for i in range(row["n"])})
                ax.errorbar([x + width * 0.15], [c.mean], yerr=[[c.mean - c.ci_low], [c.ci_high - c.mean]], fmt="D",
                            ms=5, capsize=3, color=colours[g_i % len(colours)])
    ax.axhline(0.0, color="black", linewidth=0.8)
    lo, hi = ax.get_ylim()
    margin = 0.08 * (hi - lo)
    ax.set_ylim(min(lo, -margin), max(hi, margin))  # zero, the line every verdict is read against, in view
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel((ylabel or f"difference to {baseline}, per seed") + "\n(points: seeds; ◆ and bar: mean, 95% CI)",
                  fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if any(g is not None for g in groups):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig




def plot_curve_grid(histories: dict, key: str, *, reference: str, x: str = "step", title: str | None = None,
                    ylabel: str | None = None, ncols: int = 3):
    """Small multiples, one panel per method of ``histories`` (name -> history records of all
    its seeds, with ``seed``, ``x`` and ``key``) other than ``reference``: the method's seeds
    as thin lines and their mean as a thick one, against the ``reference`` method's mean **on
    the same seeds** (grey), so that each panel compares like with like. Panels share both axes."""
    import pandas as pd

    names = [n for n in histories if n != reference]
    ref = pd.DataFrame(histories[reference])
    nrows = max(1, -(-len(names) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows + 0.6), sharex=True, sharey=True,
                             squeeze=False)
    colour = plt.rcParams["axes.prop_cycle"].by_key()["color"][1]
    for ax, name in zip(axes.flat, names):
        df = pd.DataFrame(histories[name])
        seeds = sorted(df["seed"].unique())
        for s in seeds:
            one = df[df["seed"] == s].sort_values(x)
            ax.plot(one[x], one[key], color=colour, linewidth=0.7, alpha=0.5)
        mean = df.groupby(x)[key].mean()
        ax.plot(mean.index, mean.to_numpy(), color=colour, linewidth=2.0, label=name)
        same = ref[ref["seed"].isin(seeds)].groupby(x)[key].mean()
        ax.plot(same.index, same.to_numpy(), color="grey", linewidth=1.6, linestyle="--",
                label=f"{reference}, same seeds")
        ax.set_title(f"{name} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''}: {', '.join(map(str, seeds))})",
                     fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(x)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel or key, fontsize=9)
    fig.legend([plt.Line2D([], [], color=colour, linewidth=2.0), plt.Line2D([], [], color=colour, linewidth=0.7),
                plt.Line2D([], [], color="grey", linewidth=1.6, linestyle="--")],
               ["the variant: mean over its seeds", "the variant: one seed", f"{reference}: mean over the same seeds"],
               loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1))
    return fig
