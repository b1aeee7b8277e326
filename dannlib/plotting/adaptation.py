"""Figures of adaptation runs read from the run store (notebooks 05 and 06).

- :func:`plot_adaptation_curves`: monitoring curves of stored runs, one row per domain pair,
  one column per logged key; every seed as a thin line and the mean over seeds as a thick
  line, coloured by a tag (e.g. ADDA's mapping loss, or ADDA against DANN);
- :func:`adaptation_references`: the lines those curves are read against;
- :func:`plot_loss_terms`: the terms of a composite loss (IIMT) against the step, as logged
  (per-sample values) and as weighted into the total, beside the weights' schedules.

Both take what :func:`dannlib.plan.fetch` returns (``[(tags, StoredRun), ...]``) or the
runs' histories, and return a matplotlib Figure; nothing is shown or saved here.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt

from ..results import mean_curve

__all__ = ["plot_adaptation_curves", "plot_loss_terms", "adaptation_references"]


def adaptation_references(records, runs, *, start: str = "adda_pretrain", metric: str = "target_test_acc") -> dict:
    """The reference lines of :func:`plot_adaptation_curves` for every pair of ``records``:
    the target accuracy the adaptation starts from (mean over the ok seeds of ``start``), the
    discriminator's chance level (0.5) and, where the runs' config has one, the collapse
    threshold of the predicted-class entropy (``collapse_entropy``)."""
    from ..results import aggregate

    ref = {}
    for pair in dict.fromkeys(r["pair"] for r in records):
        (src,) = aggregate([r for r in records if r["pair"] == pair and r["method"] == start] or [{}], metric)
        if src["n"]:
            ref[pair, metric] = (src["mean"], "source only (start)")
        ref[pair, "d_acc"] = (0.5, "chance")
        cfg = next((r.spec.config for t, r in runs if t["pair"] == pair), None)
        if cfg and "collapse_entropy" in cfg:
            ref[pair, "target_pred_entropy"] = (cfg["collapse_entropy"], "collapse threshold")
    return ref


def plot_adaptation_curves(runs, keys, *, colour_by: str = "method", row_by: str = "pair", x: str = "step",
                           labels: dict | None = None, names: dict | None = None, order=None,
                           reference: dict | None = None, title: str | None = None):
    """Monitoring curves of stored runs (``runs``: ``[(tags, StoredRun), ...]``): one row per
    value of ``tags[row_by]`` (e.g. the domain pair), one column per history key in ``keys``
    (e.g. ``target_test_acc``, ``d_acc``, ``target_pred_entropy``). Each run is a thin line,
    the mean over the runs of one colour (``tags[colour_by]``, in ``order``) a thick line.
    Runs whose status is not "ok" are drawn dashed (their final evaluation failed or
    collapsed) and left out of the mean. ``labels``: panel titles (key -> text);
    ``names``: legend names (colour value -> text); ``reference``: horizontal lines,
    ``{(row, key): (y, label)}`` (e.g. the source-only accuracy the adaptation starts from).
    The legend sits under the panels, so it covers no curve."""
    runs = [(t, r) for t, r in runs if r.history]
    keys = list(keys)
    labels, names, reference = labels or {}, names or {}, reference or {}
    rows = list(dict.fromkeys(t.get(row_by) for t, _ in runs)) or [None]
    colours_in = list(order) if order is not None else list(dict.fromkeys(t[colour_by] for t, _ in runs))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {c: palette[i % len(palette)] for i, c in enumerate(colours_in)}
    fig, axes = plt.subplots(len(rows), len(keys), figsize=(3.9 * len(keys), 2.9 * len(rows) + 0.6),
                             squeeze=False, sharex="row")
    legend = {}
    for r_i, row in enumerate(rows):
        for k_i, key in enumerate(keys):
            ax = axes[r_i][k_i]
            for c in colours_in:
                group = [(t, r) for t, r in runs if t.get(row_by) == row and t[colour_by] == c
                         and key in r.history[0]]
                if not group:
                    continue
                for t, r in group:
                    ok = r.status == "ok"
                    ax.plot([h[x] for h in r.history], [h.get(key, math.nan) for h in r.history],
                            color=colour[c], linewidth=0.7, alpha=0.45 if ok else 0.8,
                            linestyle="-" if ok else "--")
                mean = mean_curve([r.history for _, r in group], key, x=x, statuses=[r.status for _, r in group],
                                  complete=True)
                if mean["x"]:
                    line, = ax.plot(mean["x"], mean["mean"], color=colour[c], linewidth=2.0)
                    n_ok, n_failed = mean["n"], mean["failed"]
                    label = f"{names.get(c, c)}: mean of {n_ok} seed{'s' if n_ok != 1 else ''}"
                    legend.setdefault(c, (line, label + (f" (+{n_failed} failed, dashed)" if n_failed else "")))
            if (row, key) in reference:
                y, text = reference[row, key]
                lo, hi = ax.get_ylim()
                lo, hi = min(lo, y), max(hi, y)
                ax.set_ylim(lo - 0.04 * (hi - lo), hi + 0.12 * (hi - lo))  # room for the line's label
                ax.axhline(y, color="grey", linestyle=":", linewidth=1.2)
                ax.annotate(text, (0.99, y), xycoords=("axes fraction", "data"), xytext=(0, 2),
                            textcoords="offset points", fontsize=7, color="dimgrey", va="bottom", ha="right")
            ax.set_title((f"{row}: " if row is not None and len(rows) > 1 else "") + labels.get(key, key),
                         fontsize=9)
            ax.set_xlabel(x if r_i == len(rows) - 1 else "")
            ax.set_ylabel(labels.get(key, key) if k_i == 0 and len(keys) == 1 else "")
            ax.grid(alpha=0.3)
    if legend:
        handles = [legend[c][0] for c in colours_in if c in legend]
        texts = [legend[c][1] for c in colours_in if c in legend]
        handles.append(plt.Line2D([], [], color="grey", linewidth=0.7, alpha=0.6))
        texts.append("one seed")
        fig.legend(handles, texts, loc="lower center", ncol=min(4, len(texts)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    bottom = 0.3 / (2.9 * len(rows) + 0.6)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def plot_loss_terms(histories: list[dict], terms, *, weights: dict | None = None, schedules=("ramp",),
                    x: str = "step", labels: dict | None = None, title: str | None = None):
    """The terms of a composite loss against ``x``, from one method's history records over
    seeds (dicts with ``seed``, ``x`` and the terms): (1) each term as logged, mean ± std over
    seeds (log scale when the terms span more than a decade); (2) each term times its weight
    in the total (``weights``: term -> a history key holding its weight, e.g. ``"ramp"``, or a
    number; absent: 1), mean over seeds; (3) the ``schedules`` (e.g. the ramp, GRL lambda),
    mean over seeds. A term the history lacks is left out."""
    import numpy as np
    import pandas as pd

    labels = labels or {}
    weights = weights or {}
    df = pd.DataFrame(histories)
    terms = [t for t in terms if t in df and not df[t].isna().all()]
    schedules = [s for s in schedules if s in df and not df[s].isna().all()]
    n_seeds = int(df["seed"].nunique()) if "seed" in df else 1
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 3.6), gridspec_kw={"width_ratios": [1.2, 1.2, 0.9]})
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    positive = []
    for i, term in enumerate(terms):
        colour = palette[i % len(palette)]
        g = df.groupby(x)[term].agg(["mean", "std"]).reset_index()
        mean, std = g["mean"].to_numpy(), g["std"].fillna(0.0).to_numpy()
        axes[0].plot(g[x], mean, color=colour, label=labels.get(term, term))
        axes[0].fill_between(g[x], np.maximum(mean - std, 1e-12), mean + std, color=colour, alpha=0.2, linewidth=0)
        positive += [v for v in mean if v > 0]
        w = weights.get(term, 1.0)
        weight = df[w] if isinstance(w, str) else float(w)
        weighted = (df[term] * weight).groupby(df[x]).mean()
        axes[1].plot(weighted.index, weighted.to_numpy(), color=colour, label=labels.get(term, term))
    if positive and max(positive) / min(positive) > 10:
        axes[0].set_yscale("log")
    axes[0].set_title(f"per-sample terms as logged (mean ± std, {n_seeds} seed{'s' if n_seeds != 1 else ''})",
                      fontsize=9)
    axes[0].set_ylabel("loss")
    axes[1].set_title("as weighted in the total loss (mean over seeds)", fontsize=9)
    axes[1].set_ylabel("weight × loss")
    for i, s in enumerate(schedules):
        g = df.groupby(x)[s].mean()
        axes[2].plot(g.index, g.to_numpy(), color=palette[(len(terms) + i) % len(palette)],
                     label=labels.get(s, s))
    axes[2].set_ylim(bottom=0.0)  # weights start at 0: show the whole rise
    axes[2].set_title("weights' schedules", fontsize=9)
    axes[2].set_ylabel("weight")
    for ax in axes:
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    handles, texts = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, texts, loc="lower center", ncol=min(6, len(texts)), fontsize=8, frameon=False)
    if schedules:
        axes[2].legend(fontsize=8, loc="lower right", frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig
