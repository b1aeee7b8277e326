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


def test_seed_points_summarise_by_median_and_iqr():
    """A bimodal spread (four seeds at 0.9, one at 0.1) is drawn at its median with the IQR,
    not as a mean ± sd bar reaching values no seed took."""
    import numpy as np

    recs = [{"method": "m", "seed": s, "acc": v, "status": "ok"} for s, v in enumerate([0.9, 0.9, 0.9, 0.9, 0.1])]
    fig = plot_seed_points(recs, "acc", x="method")
    ax = fig.axes[0]
    (diamond,) = [line for line in ax.get_lines() if line.get_marker() == "D"]
    assert np.allclose(diamond.get_ydata(), 0.9)  # the median, not the mean 0.74
    bars = np.concatenate([line.get_ydata() for line in ax.get_lines() if line.get_marker() != "D"])
    assert np.nanmax(bars) <= 0.9 + 1e-9 and np.nanmin(bars) >= 0.9 - 1e-9  # the IQR [0.9, 0.9], not 0.74 ± 0.36
    plt.close(fig)


def test_curve_grid_compares_each_variant_with_the_reference_on_its_own_seeds():
    from dannlib.plotting import plot_curve_grid

    ref = [{"seed": s, "step": t, "acc": 0.1 * s} for s in range(5) for t in (1, 2)]
    var = [{"seed": s, "step": t, "acc": 1.0} for s in (0, 1) for t in (1, 2)]
    fig = plot_curve_grid({"ref": ref, "var": var}, "acc", reference="ref")
    ax = fig.axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == pytest.approx([0.05, 0.05])  # seeds 0, 1 only
    assert "2 seeds: 0, 1" in ax.get_title()
    plt.close(fig)


def test_paired_differences_figure_draws_the_t_interval():
    from dannlib.plotting import plot_paired_differences

    fig = plot_paired_differences([{"method": "m", "group": None, "diffs": [1.0, 2.0, 3.0], "n": 3, "mean": 2.0,
                                    "std": 1.0}])
    ax = fig.axes[0]
    spans = [tuple(seg[:, 1]) for c in ax.containers for bars in c.lines[2] for seg in bars.get_segments()]
    # mean 2, half-width t_{0.975,2} * 1 / sqrt(3) = 2.484 (not the sd, 1)
    assert any(lo == pytest.approx(2 - 2.484138, abs=1e-4) and hi == pytest.approx(2 + 2.484138, abs=1e-4)
               for lo, hi in spans)
    plt.close(fig)


def test_curves_leave_out_a_run_whose_final_status_alone_says_it_failed():
    """ADDA writes "collapsed" into the final evaluation only; the pooled histories carry it to the curves."""
    from types import SimpleNamespace

    from dann_study.plan import histories
    from dannlib.results import mean_curve, runs_of

    def run(seed, acc, status):
        return {"method": "adda_gan"}, SimpleNamespace(status=status, history=[
            {"seed": seed, "step": step, "acc": acc, "status": "ok"} for step in (1, 2)])

    pooled = histories([run(0, 0.8, "ok"), run(1, 0.1, "collapsed")])["adda_gan"]
    g = mean_curve(runs_of(pooled), "acc")
    assert g["mean"] == [0.8, 0.8] and g["failed"] == 1


def test_mean_curve_leaves_out_runs_that_are_not_ok_like_the_tables():
    from dannlib.results import mean_curve, runs_of

    ok = [{"step": s, "seed": 0, "acc": 0.5, "status": "ok"} for s in (1, 2)]
    ok2 = [{"step": s, "seed": 1, "acc": 0.7, "status": "ok"} for s in (1, 2)]
    bad = [{"step": 1, "seed": 2, "acc": 0.0, "status": "ok"}, {"step": 2, "seed": 2, "acc": 9.0, "status": "diverged"}]
    g = mean_curve(runs_of(ok + ok2 + bad), "acc")
    assert g["x"] == [1, 2] and g["mean"] == pytest.approx([0.6, 0.6]) and g["n"] == 2 and g["failed"] == 1
    g = mean_curve([ok, ok2[:1]], "acc", statuses=["ok", "ok"], complete=True)
    assert g["x"] == [1] and g["count"] == [2]
    assert mean_curve([ok, ok2], "acc", statuses=["ok", "collapsed"])["mean"] == [0.5, 0.5]


def test_seed_point_medians_sit_on_their_own_points_with_many_hue_levels():
    import numpy as np

    from dannlib.plotting import plot_seed_points
    levels = [f"g{j}" for j in range(6)]  # 07 plots six grids side by side
    recs = [{"method": m, "grid": g, "seed": s, "v": float(10 * j + i + 0.01 * s), "status": "ok"}
            for i, m in enumerate(["a", "b"]) for j, g in enumerate(levels) for s in range(3)]
    ax = plot_seed_points(recs, "v", x="method", hue="grid").axes[0]
    points = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    medians = [line for line in ax.lines if len(line.get_xdata()) == 2]  # a diamond per method, one line per level
    assert len(medians) == len(levels)
    for line in medians:
        for x, y in zip(line.get_xdata(), line.get_ydata()):
            cloud = points[np.abs(points[:, 1] - y) < 0.05, 0]  # this level's seeds in this column
            assert len(cloud) == 3 and abs(cloud.mean() - x) < 0.05, (x, cloud)


def test_the_legend_says_how_many_seeds_each_rows_mean_rests_on():
    runs = [({"pair": "A->B", "method": "m"}, _run("ok", [0.1, 0.2])) for _ in range(3)]
    runs += [({"pair": "B->A", "method": "m"}, _run("ok", [0.1, 0.2]))]
    runs += [({"pair": "B->A", "method": "m"}, _run("collapsed", [0.9, 0.9])) for _ in range(2)]
    fig = plot_adaptation_curves(runs, ["target_test_acc"])
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[0] == "m: mean of 3/1 seeds by row (+0/2 failed, dashed)", texts
    plt.close(fig)


def test_loss_terms_leave_out_a_run_that_did_not_finish_ok():
    hist = [{"seed": 0, "step": t, "a": 1.0} for t in (0, 5)] + [{"seed": 1, "step": t, "a": 9.0} for t in (0, 5)]
    hist[-1]["status"] = "diverged"
    fig = plot_loss_terms(hist, ["a"], schedules=())
    assert [list(line.get_ydata()) for line in fig.axes[0].get_lines() if line.get_label() == "a"] == [[1.0, 1.0]]
    plt.close(fig)
