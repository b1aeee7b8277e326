"""Saving, schedules, curves over seeds, per-seed points, paired differences, setting sweeps (no ``matplotlib.use``)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..results import aggregate, mean_curve, runs_of
from ..utils import atomic_path

FIGURE_FORMATS = ("png", "svg")
_METADATA = {"svg": {"Date": None, "Creator": None}, "png": {"Software": None},
             "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}


def save_figure(fig, figures_dir, notebook: str, name: str, *, dpi: int = 110, formats=FIGURE_FORMATS) -> list[Path]:
    """Write ``fig`` atomically as ``figures_dir/notebook/name.{png,svg}`` (runs of characters outside
    ``[A-Za-z0-9._-]`` in ``name``: one ``_``), the same bytes every time. Returns the written paths."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    out = [Path(figures_dir) / notebook / f"{name}.{ext}" for ext in formats]
    for path, ext in zip(out, formats):
        with atomic_path(path) as tmp, matplotlib.rc_context({"svg.hashsalt": "dannlib"}):  # else salted at random
            fig.savefig(tmp, format=ext, bbox_inches="tight", metadata=dict(_METADATA.get(ext, {})),
                        **({"dpi": dpi} if ext == "png" else {}))
    return out


def _seed_axes(fig, ax, ticks, ylabel: str, bar: str, title: str | None):
    """The per-seed plots' x ticks, y label (what the points and bars are) and grid; ``fig`` laid out."""
    ax.set_xticks(range(len(ticks)), ticks, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(f"{ylabel}\n(points: seeds; ◆ and bar: {bar})", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return finish(fig)


def finish(fig, title: str | None = None, rect=(0, 0, 1, 1), **title_kw):
    """``fig`` titled (if ``title``) and laid out within ``rect`` (figure fractions)."""
    if title:
        fig.suptitle(title, **title_kw)
    fig.tight_layout(rect=rect)
    return fig


def seed_lines(ax, runs, statuses, key: str, x: str, colour, *, alpha: float = 0.45, complete: bool = False):
    """Each run's ``key`` against ``x`` thin (dashed if its status is not "ok"), the mean over the ok runs
    (:func:`dannlib.results.mean_curve`) thick. Returns (the thick line or None, the mean)."""
    for run, status in zip(runs, statuses):
        ok = status == "ok"
        ax.plot([h[x] for h in run], [h.get(key, math.nan) for h in run], color=colour, linewidth=0.7,
                alpha=alpha if ok else 0.8, linestyle="-" if ok else "--")
    g = mean_curve(runs, key, x=x, statuses=statuses, complete=complete)
    return (ax.plot(g["x"], g["mean"], color=colour, linewidth=2.0)[0] if g["x"] else None), g


def plot_schedules(progress, series: dict, *, title: str = "Schedules against training progress p"):
    """One panel per named series (e.g. ``{"lambda_p (eq. 6)": ..., "mu_p (eq. 7)": ...}``)."""
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.2), squeeze=False)
    for ax, (name, values) in zip(axes[0], series.items()):
        ax.plot(progress, values)
        ax.set(xlabel="training progress p", title=name)
        ax.grid(alpha=0.3)
    return finish(fig, title)


def plot_method_curves(histories: dict, keys, *, x: str = "step", title: str | None = None, labels: dict | None = None):
    """One panel per key (``labels``: key -> title): each method's (name -> history records of all its seeds)
    mean ± std over its "ok" seeds against ``x`` (:func:`dannlib.results.mean_curve`), where it has the key."""
    keys, labels, runs = list(keys), labels or {}, {name: runs_of(hist) for name, hist in histories.items()}
    fig, axes = plt.subplots(1, len(keys), figsize=(max(6.5, 3.9 * len(keys)), 3.3 if len(keys) > 1 else 4.0),
                             squeeze=False)
    legend = {}
    for ax, key in zip(axes[0], keys):
        for m_i, (name, r) in enumerate(runs.items()):
            if (g := mean_curve(r, key, x=x))["x"]:
                mean, std, n = np.asarray(g["mean"]), np.nan_to_num(np.asarray(g["std"]), nan=0.0), len(r) - g["failed"]
                ax.plot(g["x"], mean, color=f"C{m_i}", label=f"{name} ({n} seed{'s' if n != 1 else ''})")
                ax.fill_between(g["x"], mean - std, mean + std, color=f"C{m_i}", alpha=0.2, linewidth=0)
        ax.set_title(labels.get(key, key), fontsize=10)
        ax.set(xlabel=x)
        ax.grid(alpha=0.3)
        for h, n in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(n, h)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(4, len(legend)), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02))
    return finish(fig, title, (0, 0.08, 1, 1))


def plot_curve_grid(histories: dict, key: str, *, reference: str, title: str | None = None, ylabel: str | None = None):
    """One panel per method (name -> history records of all its seeds) but ``reference``, three a row: its seeds
    and their mean (:func:`seed_lines`) against the mean of ``reference`` on the same ok seeds (grey dashed)."""
    names = [n for n in histories if n != reference]
    nrows = max(1, -(-len(names) // 3))
    fig, axes = plt.subplots(nrows, 3, figsize=(3.4 * 3, 2.6 * nrows + 0.6), sharex=True, sharey=True, squeeze=False)
    colour = "C1"
    for ax, name in zip(axes.flat, names):
        runs = [sorted(r, key=lambda h: h["step"]) for r in sorted(runs_of(histories[name]),
                                                                     key=lambda r: r[0]["seed"])]
        statuses = [r[-1].get("status", "ok") for r in runs]
        seed_lines(ax, runs, statuses, key, "step", colour, alpha=0.5)
        ok = {r[0]["seed"] for r, status in zip(runs, statuses) if status == "ok"}
        same = mean_curve([r for r in runs_of(histories[reference]) if r[0]["seed"] in ok], key)
        ax.plot(same["x"], same["mean"], color="grey", linewidth=1.6, linestyle="--")
        seeds = [r[0]["seed"] for r in runs]
        ax.set_title(f"{name} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''}: {', '.join(map(str, seeds))})",
                     fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel or key, fontsize=9)
    fig.legend([plt.Line2D([], [], color=colour, linewidth=2.0), plt.Line2D([], [], color=colour, linewidth=0.7),
                plt.Line2D([], [], color="grey", linewidth=1.6, linestyle="--")],
               ["the variant: mean over its seeds", "the variant: one seed", f"{reference}: mean over the same seeds"],
               loc="lower center", ncol=3, fontsize=8, frameon=False)
    return finish(fig, title, (0, 0.35 / fig.get_figheight(), 1, 1), fontsize=10)


def plot_seed_points(records: list, metric: str, *, x: str = "method", hue: str | None = None, order=None,
                     hue_order=None, ylabel: str | None = None, title: str | None = None, reference: dict | None = None,
                     ylim: tuple | None = None):
    """Every "ok" seed a point (seaborn strip plot, jitter seeded per call) beside the **median and IQR** over
    seeds (a bimodal spread gets no bar reaching values no seed took), one column per ``x`` (in ``order``),
    coloured by ``hue``, counts of seeds (and failed runs) below. ``reference``: label -> y, drawn as lines."""
    import seaborn as sns

    df = pd.DataFrame([r for r in records if r.get("status", "ok") == "ok" and r.get(metric) is not None])
    order = list(order) if order is not None else list(dict.fromkeys(r[x] for r in records))
    hue_order = list(hue_order) if hue_order is not None else (
        list(dict.fromkeys(r[hue] for r in records)) if hue else None)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(order) * (len(hue_order) if hue else 1) + 2.0), 3.8))
    kw = dict(data=df, x=x, y=metric, order=order, hue=hue, hue_order=hue_order, ax=ax)
    dodge = bool(hue) and len(hue_order) > 1  # seaborn divides by (levels - 1): one level cannot dodge
    state = np.random.get_state()  # seaborn jitters with numpy's global generator: seed it, then restore it
    try:
        np.random.seed(0)
        sns.stripplot(**kw, dodge=dodge, alpha=0.55, size=5, jitter=0.15, legend=False)
    finally:
        np.random.set_state(state)
    # the strip spreads its levels over 0.8 of a column; pointplot's dodge is the span of its levels' centres
    sns.pointplot(**kw, estimator="median", errorbar=("pi", 50), dodge=0.8 - 0.8 / len(hue_order) if dodge else False,
                  capsize=0.15, linestyle="none", markers="D", markersize=5, err_kws={"linewidth": 1.4})
    tally = {(g[x], g.get(hue)): f"{g['n']}" + (f"+{g['failed']}✗" if g["failed"] else "")
             for g in aggregate(records, metric, [x] + ([hue] if hue else []))}
    labels = [f"{name}\n(n={'/'.join(tally[name, h] for h in hue_order or [None] if (name, h) in tally)})"
              for name in order]
    ax.set_xlabel("")
    for label, y in (reference or {}).items():
        ax.axhline(y, color="grey", linestyle="--", linewidth=1)
        ax.annotate(label, (1.0, y), xycoords=("axes fraction", "data"), xytext=(3, 0), textcoords="offset points",
                    fontsize=7, color="grey", va="center")
    if ylim is not None:
        ax.set_ylim(*ylim)
    if hue:  # under the axes: clear of the points and of the reference lines' labels at the right
        ax.legend(title=hue, fontsize=8, title_fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.32),
                  ncol=len(hue_order), frameon=False)
    return _seed_axes(fig, ax, labels, ylabel or metric, "median, IQR", title)


def plot_paired_differences(diffs: list, *, by: str = "method", baseline: str = "", title: str | None = None,
                            ylabel: str | None = None):
    """Per-seed paired differences (``dannlib.results.paired_differences`` rows) as points beside their mean and
    95% paired t-interval (:func:`dannlib.stats.paired`), one column per variant (and group), a zero line."""
    from ..stats import paired

    groups, names = list(dict.fromkeys(d.get("group") for d in diffs)), list(dict.fromkeys(d[by] for d in diffs))
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.8 * len(names) * len(groups) + 2.0), 3.6))
    for g_i, g in enumerate(groups):
        colour = f"C{g_i}"
        for n_i, name in enumerate(names):
            if not (row := next((d for d in diffs if d[by] == name and d.get("group") == g), {})).get("diffs"):
                continue
            x = n_i + (g_i - (len(groups) - 1) / 2) * width
            ax.scatter(np.full(len(row["diffs"]), x - width * 0.15), row["diffs"], s=16, alpha=0.6, color=colour,
                       label=str(g) if n_i == 0 and g is not None else None)
            if row["n"] > 1:
                c = paired(dict(enumerate(row["diffs"])), {i: 0.0 for i in range(row["n"])})
                ax.errorbar([x + width * 0.15], [c.mean], yerr=[[c.mean - c.ci_low], [c.ci_high - c.mean]], fmt="D",
                            ms=5, capsize=3, color=colour)
    ax.axhline(0.0, color="black", linewidth=0.8)
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, -0.08 * (hi - lo)), max(hi, 0.08 * (hi - lo)))  # zero, what every verdict reads, in view
    ax.set_xlim(-0.6, len(names) - 0.4)
    if any(g is not None for g in groups):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _seed_axes(fig, ax, names, ylabel or f"difference to {baseline}, per seed", "mean, 95% CI", title)


def plot_setting_sweep(records: list, metric: str, *, x: str, hue: str | None = None, panel: str | None = None,
                       control: dict | None = None, control_label: str = "control", ylabel: str | None = None,
                       title: str | None = None):
    """``metric`` against the setting ``x`` (07's grids, log axis): a line per ``hue`` through the ok seeds' means,
    each ok seed a point (set apart per line, no jitter), a panel per ``panel``, runs not ok counted in the legend;
    ``control`` (tag -> value) picks a control: grey dashed at its mean, its seeds at the right edge."""
    scored = [(r, control is not None and all(r.get(k) == v for k, v in control.items())) for r in records
              if r.get(metric) is not None]
    grid, ctrl = [r for r, c in scored if not c], [r for r, c in scored if c]
    panels = list(dict.fromkeys(r.get(panel) for r in records)) if panel else [None]
    hues = list(dict.fromkeys(r.get(hue) for r in grid)) if hue else [None]
    xs = sorted({float(r[x]) for r in grid})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), sharey=True, squeeze=False)
    span = math.log10(max(xs) / min(xs)) if xs and min(xs) > 0 and max(xs) > min(xs) else (
        max(xs) - min(xs) if len(xs) > 1 else 1.0)
    for ax, p in zip(axes[0], panels):
        for i, h in enumerate(hues):
            rows = [r for r in grid if (panel is None or r.get(panel) == p) and (hue is None or r.get(hue) == h)]
            if not rows:
                continue
            colour = f"C{i}"
            cells = sorted(aggregate(rows, metric, by=(x,)), key=lambda g: float(g[x]))
            shift = 0.015 * span * (i - (len(hues) - 1) / 2)
            for g in (g for g in cells if g["values"]):  # a cell whose runs all failed has no point
                offsets = np.linspace(-0.006, 0.006, len(g["values"])) * span if len(g["values"]) > 1 else [0.0]
                ax.scatter([float(g[x]) * 10 ** (shift + o) for o in offsets], g["values"], s=14, color=colour,
                           alpha=0.5, linewidths=0)
            failed = sum(g["failed"] for g in cells)
            ax.plot([float(g[x]) * 10 ** shift for g in cells if g["n"]], [g["mean"] for g in cells if g["n"]], "-o",
                    color=colour, markersize=4,
                    label=(f"{hue} = {h}" if hue else metric) + (f" ({failed} run(s) not ok)" if failed else ""))
        c_rows = [r for r in ctrl if panel is None or r.get(panel) == p]
        c = aggregate(c_rows, metric, by=())[0] if c_rows else None
        if c and c["n"]:
            ax.axhline(c["mean"], color="grey", linestyle="--", linewidth=1.2,
                       label=f"{control_label} (mean of {c['n']} seed(s))")
            ax.scatter([1.02] * c["n"], c["values"], s=14, color="grey", alpha=0.6, linewidths=0,
                       transform=ax.get_yaxis_transform(), clip_on=False)
        ax.set(xscale="log", xlabel=x)
        if len(xs) == 1:  # one setting: a window around it, not the points' tiny spread
            ax.set_xlim(*((xs[0] / 3, xs[0] * 3) if xs[0] > 0 else (xs[0] - 1, xs[0] + 1)))
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        if panel:
            ax.set_title(f"{panel} = {p}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    axes[0][0].set_ylabel((ylabel or metric) + "\n(points: seeds; line: mean)", fontsize=9)
    return finish(fig, title, fontsize=10)
