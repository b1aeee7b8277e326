"""The hyper-parameter sweeps of notebook 07 as figures: a metric against one setting, one line
per value of another, every seed a point, a control as a reference line."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt


def plot_setting_sweep(records: list, metric: str, *, x: str, hue: str | None = None, panel: str | None = None,
                       control: dict | None = None, control_label: str = "control", log_x: bool = True,
                       ylabel: str | None = None, title: str | None = None):
    """``metric`` against the setting ``x`` (e.g. DANN's ``lambda_max``): one line per value
    of ``hue`` (e.g. the λ schedule) through the **mean over seeds** of each setting, every
    seed a point (set a little apart per line, in a fixed pattern: no random jitter), one
    panel per value of ``panel`` (e.g. the learning rate). ``control`` (tag -> value, e.g.
    ``{"schedule": "none"}``) picks the records of a control run (e.g. DANN without gradient
    reversal): drawn in each panel (its records with the panel's value) as a grey dashed
    line at its mean with its seeds as points at the right edge, not as a point of ``x``.
    Only runs with status "ok" are drawn; the runs that are not, per line, are counted in the
    legend. ``log_x``: a logarithmic ``x`` axis (the grids are roughly geometric)."""
    import numpy as np

    from ..results import aggregate

    def is_control(r):
        return control is not None and all(r.get(k) == v for k, v in control.items())

    grid = [r for r in records if not is_control(r) and r.get(metric) is not None]
    ctrl = [r for r in records if is_control(r) and r.get(metric) is not None]
    panels = list(dict.fromkeys(r.get(panel) for r in records)) if panel else [None]
    hues = list(dict.fromkeys(r.get(hue) for r in grid)) if hue else [None]
    xs = sorted({float(r[x]) for r in grid})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), sharey=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    span = (math.log10(max(xs) / min(xs)) if log_x and xs and min(xs) > 0 and max(xs) > min(xs) else
            (max(xs) - min(xs) if len(xs) > 1 else 1.0))
    for ax, p in zip(axes[0], panels):
        in_panel = [r for r in grid if panel is None or r.get(panel) == p]
        for i, h in enumerate(hues):
            rows = [r for r in in_panel if hue is None or r.get(hue) == h]
            if not rows:
                continue
            colour = colours[i % len(colours)]
            cells = sorted(aggregate(rows, metric, by=(x,)), key=lambda g: float(g[x]))
            shift = 0.015 * span * (i - (len(hues) - 1) / 2)  # lines set apart, in axis units
            for g in (g for g in cells if g["values"]):  # a cell whose runs all failed has no point
                offsets = np.linspace(-0.006, 0.006, len(g["values"])) * span if len(g["values"]) > 1 else [0.0]
                at = [_move(float(g[x]), shift + o, log_x) for o in offsets]
                ax.scatter(at, g["values"], s=14, color=colour, alpha=0.5, linewidths=0)
            ok = [g for g in cells if g["n"]]
            failed = sum(g["failed"] for g in cells)
            label = (f"{hue} = {h}" if hue else metric) + (f" ({failed} run(s) not ok)" if failed else "")
            ax.plot([_move(float(g[x]), shift, log_x) for g in ok], [g["mean"] for g in ok], "-o", color=colour,
                    markersize=4, label=label)
        c_rows = [r for r in ctrl if panel is None or r.get(panel) == p]
        c = aggregate(c_rows, metric, by=())[0] if c_rows else None
        if c and c["n"]:
            ax.axhline(c["mean"], color="grey", linestyle="--", linewidth=1.2,
                       label=f"{control_label} (mean of {c['n']} seed(s))")
            ax.scatter([1.02] * c["n"], c["values"], s=14, color="grey", alpha=0.6, linewidths=0,
                       transform=ax.get_yaxis_transform(), clip_on=False)
        if log_x:
            ax.set_xscale("log")
        if len(xs) == 1:  # one setting: a window around it, not the points' tiny spread
            ax.set_xlim(*((xs[0] / 3, xs[0] * 3) if log_x and xs[0] > 0 else (xs[0] - 1, xs[0] + 1)))
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{v:g}" for v in xs])
        ax.minorticks_off()
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        if panel:
            ax.set_title(f"{panel} = {p}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    axes[0][0].set_ylabel((ylabel or metric) + "\n(points: seeds; line: mean)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _move(value: float, shift: float, log_x: bool) -> float:
    """``value`` moved by ``shift`` axis units (decades on a log axis)."""
    return value * 10 ** shift if log_x else value + shift
