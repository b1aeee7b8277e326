"""The helpers notebooks 05 and 06 build their figures and sentences from:
``dannlib.plotting.adaptation``."""
from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from dannlib.plotting import plot_adaptation_curves, plot_loss_terms, plot_seed_points  # noqa: E402


def _run(status, values, key="target_test_acc"):
    return SimpleNamespace(status=status, history=[{"step": 10 * i, key: v, "seed": 0} for i, v in enumerate(values)])


def test_adaptation_curves_mean_leaves_out_failed_runs():
    runs = [({"pair": "A->B", "method": "m"}, _run("ok", [0.1, 0.2])),
            ({"pair": "A->B", "method": "m"}, _run("ok", [0.3, 0.4])),
            ({"pair": "A->B", "method": "m"}, _run("collapsed", [0.9, 0.9]))]
    fig = plot_adaptation_curves(runs, ["target_test_acc"], reference={("A->B", "target_test_acc"): (0.05, "start")})
    ax = fig.axes[0]
    thick = [line for line in ax.get_lines() if line.get_linewidth() == 2.0]
    assert len(thick) == 1 and list(thick[0].get_ydata()) == pytest.approx([0.2, 0.3])
    assert [line.get_linestyle() for line in ax.get_lines() if line.get_linewidth() < 1] == ["-", "-", "--"]
    assert ax.get_ylim()[0] < 0.05  # the reference line is in view
    plt.close(fig)


def test_loss_terms_weighted_by_the_history_key():
    hist = [{"seed": s, "step": t, "a": 1.0, "b": 2.0, "ramp": t / 10} for s in (0, 1) for t in (0, 5, 10)]
    fig = plot_loss_terms(hist, ["a", "b", "missing"], weights={"b": "ramp"}, schedules=("ramp",))
    weighted = {line.get_label(): list(line.get_ydata()) for line in fig.axes[1].get_lines()}
    assert weighted == {"a": [1.0, 1.0, 1.0], "b": [0.0, 1.0, 2.0]}
    plt.close(fig)


def test_seed_points_with_a_single_hue_level():
    recs = [{"method": m, "seed": s, "acc": 0.5 + 0.1 * s, "status": "ok", "pair": "A->B"}
            for m in ("x", "y") for s in (0, 1)]
    fig = plot_seed_points(recs, "acc", x="method", hue="pair")
    assert not math.isnan(fig.axes[0].get_ylim()[0])
    plt.close(fig)


def test_seed_points_are_the_same_figure_every_time():
    """The strip plot's jitter is seeded per call: regenerating a figure from the same records
    gives the same point positions (and so the same file), and the caller's global numpy
    generator is left where it was."""
    import numpy as np

    recs = [{"method": m, "seed": s, "acc": 0.5 + 0.01 * s, "status": "ok"} for m in ("x", "y") for s in range(5)]

    def offsets():
        fig = plot_seed_points(recs, "acc", x="method")
        xy = [c.get_offsets().tolist() for c in fig.axes[0].collections if len(c.get_offsets())]
        plt.close(fig)
        return xy

    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = offsets()
    assert (np.random.get_state()[1] == before).all()
    np.random.random(1000)  # another draw in between must not move the points
    assert offsets() == first
    xs = [x for x, _ in first[0]]
    assert len(set(xs)) > 1  # jittered, not all on one line
