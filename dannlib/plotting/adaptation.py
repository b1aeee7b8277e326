"""Figures of adaptation runs (notebooks 05 and 06) from :func:`dann_study.plan.fetch` or the runs' histories."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..results import aggregate, ok_histories
from .common import finish, seed_lines


def adaptation_references(records, runs, *, start: str = "adda_pretrain", metric: str = "target_test_acc") -> dict:
    """:func:`plot_adaptation_curves`'s lines per pair: the target accuracy the adaptation starts from (ok seeds
    of ``start``), the discriminator's chance (0.5), the config's ``collapse_entropy`` where it has one."""
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
    """Curves of stored runs (``[(tags, StoredRun), ...]``), a row per ``tags[row_by]``, a column per history
    key: :func:`seed_lines` per ``tags[colour_by]`` (in ``order``), the mean over the steps every ok run logged.
    ``labels``: key -> title; ``names``: colour -> legend name; ``reference``: ``{(row, key): (y, label)}``."""
    runs = [(t, r) for t, r in runs if r.history]
    keys, labels, names, reference = list(keys), labels or {}, names or {}, reference or {}
    rows = list(dict.fromkeys(t.get(row_by) for t, _ in runs)) or [None]
    colours_in = list(order) if order is not None else list(dict.fromkeys(t[colour_by] for t, _ in runs))
    fig, axes = plt.subplots(len(rows), len(keys), figsize=(3.9 * len(keys), 2.9 * len(rows) + 0.6),
                             squeeze=False, sharex="row")
    legend = {}
    for r_i, row in enumerate(rows):
        for ax, key in zip(axes[r_i], keys):
            for c_i, c in enumerate(colours_in):
                group = [r for t, r in runs if t.get(row_by) == row and t[colour_by] == c and key in r.history[0]]
                line, mean = seed_lines(ax, [r.history for r in group], [r.status for r in group], key, x,
                                        f"C{c_i}", complete=True)
                if line is not None:
                    legend.setdefault(c, (line, []))[1].append((mean["n"], mean["failed"]))
            if (row, key) in reference:
                y, text = reference[row, key]
                lo, hi = min(ax.get_ylim()[0], y), max(ax.get_ylim()[1], y)
                ax.set_ylim(lo - 0.04 * (hi - lo), hi + 0.12 * (hi - lo))  # room for the line's label
                ax.axhline(y, color="grey", linestyle=":", linewidth=1.2)
                ax.annotate(text, (0.99, y), xycoords=("axes fraction", "data"), xytext=(0, 2),
                            textcoords="offset points", fontsize=7, color="dimgrey", va="bottom", ha="right")
            ax.set_title((f"{row}: " if row is not None and len(rows) > 1 else "") + labels.get(key, key), fontsize=9)
            ax.set(xlabel=x if r_i == len(rows) - 1 else "", ylabel=labels.get(key, key) if len(keys) == 1 else "")
            ax.grid(alpha=0.3)
    if legend:
        def text(c, counts):  # the seeds behind each row's mean: one number where the rows agree
            ns, fails = ("/".join(dict.fromkeys(str(v[i]) for v in counts)) for i in (0, 1))
            by_row = " by row" if len(set(counts)) > 1 else ""
            return (f"{names.get(c, c)}: mean of {ns} seed{'s' if ns != '1' else ''}{by_row}"
                    + (f" (+{fails} failed, dashed)" if any(f for _, f in counts) else ""))
        shown = [(legend[c][0], text(c, legend[c][1])) for c in colours_in if c in legend]
        shown.append((plt.Line2D([], [], color="grey", linewidth=0.7, alpha=0.6), "one seed"))
        fig.legend(*zip(*shown), loc="lower center", ncol=min(4, len(shown)), fontsize=8, frameon=False)
    return finish(fig, title, (0, 0.3 / (2.9 * len(rows) + 0.6), 1, 1), fontsize=10)


def plot_loss_terms(histories: list[dict], terms, *, weights: dict | None = None, schedules=("ramp",),
                    x: str = "step", labels: dict | None = None, title: str | None = None):
    """A composite loss's terms (IIMT) against ``x`` over seeds' history records: as logged (mean ± std, log
    scale past a decade); times their weight (``weights``: term -> a history key or a number; absent: 1); and
    the ``schedules``, each a mean over seeds. Terms the history lacks are left out."""
    histories = ok_histories(histories)
    labels, weights, df = labels or {}, weights or {}, pd.DataFrame(histories)
    terms = [t for t in terms if t in df and not df[t].isna().all()]
    schedules = [s for s in schedules if s in df and not df[s].isna().all()]
    n_seeds = int(df["seed"].nunique()) if "seed" in df else 1
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 3.6), gridspec_kw={"width_ratios": [1.2, 1.2, 0.9]})
    positive = []
    for i, term in enumerate(terms):
        colour = f"C{i}"
        g = df.groupby(x)[term].agg(["mean", "std"]).reset_index()
        mean, std = g["mean"].to_numpy(), g["std"].fillna(0.0).to_numpy()
        axes[0].plot(g[x], mean, color=colour, label=labels.get(term, term))
        axes[0].fill_between(g[x], np.maximum(mean - std, 1e-12), mean + std, color=colour, alpha=0.2, linewidth=0)
        positive += [v for v in mean if v > 0]
        w = weights.get(term, 1.0)
        weighted = (df[term] * (df[w] if isinstance(w, str) else float(w))).groupby(df[x]).mean()
        axes[1].plot(weighted.index, weighted.to_numpy(), color=colour, label=labels.get(term, term))
    if positive and max(positive) / min(positive) > 10:
        axes[0].set_yscale("log")
    for i, s in enumerate(schedules):
        g = df.groupby(x)[s].mean()
        axes[2].plot(g.index, g.to_numpy(), color=f"C{len(terms) + i}", label=labels.get(s, s))
    axes[2].set_ylim(bottom=0.0)  # weights start at 0: show the whole rise
    titles = (f"per-sample terms as logged (mean ± std, {n_seeds} seed{'s' if n_seeds != 1 else ''})",
              "as weighted in the total loss (mean over seeds)", "weights' schedules")
    for ax, ylabel, text in zip(axes, ("loss", "weight × loss", "weight"), titles):
        ax.set(ylabel=ylabel, xlabel=x)
        ax.set_title(text, fontsize=9)
        ax.grid(alpha=0.3)
    handles, texts = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, texts, loc="lower center", ncol=min(6, len(texts)), fontsize=8, frameon=False)
    if schedules:
        axes[2].legend(fontsize=8, loc="lower right", frameon=False)
    return finish(fig, title, (0, 0.09, 1, 1), fontsize=10)


def plot_accuracy_seconds(records, groups: dict, *, seconds, metric: str = "target_test_acc",
                          budget: float | None = None, reference: dict | None = None, title: str | None = None):
    """Each ok run a point, ``metric`` against its ``seconds(record)`` (log axis), one colour per group
    (``groups``: label -> predicate on a record), the group's mean as a diamond; ``budget`` a dotted vertical
    line, ``reference`` (label -> y) dashed horizontal lines."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ok = [r for r in records if r.get("status", "ok") == "ok" and r.get(metric) is not None]
    for i, (label, keep) in enumerate(groups.items()):
        if not (rs := [r for r in ok if keep(r)]):
            continue
        xs, ys = [seconds(r) for r in rs], [r[metric] for r in rs]
        ax.scatter(xs, ys, s=18, alpha=0.55, color=f"C{i}", linewidths=0, label=f"{label} ({len(rs)} runs)")
        ax.scatter([sum(xs) / len(xs)], [sum(ys) / len(ys)], s=60, marker="D", color=f"C{i}",
                   edgecolors="black", linewidths=0.6)
    if budget is not None:
        ax.axvline(budget, color="black", linestyle=":", linewidth=1)
        ax.annotate(f"{budget:g} s", (budget, 0.02), xycoords=("data", "axes fraction"), xytext=(3, 0),
                    textcoords="offset points", fontsize=7)
    for label, y in (reference or {}).items():
        ax.axhline(y, color="grey", linestyle="--", linewidth=1)
        ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points",
                    fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set(xlabel="seconds per run, one core (log scale)", ylabel=f"{metric} (points: runs; ◆: mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return finish(fig, title, fontsize=10)
