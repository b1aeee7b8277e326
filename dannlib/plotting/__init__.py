"""Plotting helpers: each returns a matplotlib figure (nothing is shown or saved behind the
caller's back); :func:`save_figure` writes it reproducibly (PNG and SVG).

- :mod:`.common`: saving, schedules, training curves over seeds (and small multiples
  against a reference on the same seeds), per-seed points, paired differences;
- :mod:`.images`: image grids, MNIST-M's construction, channel histograms, embeddings;
- :mod:`.toys`: the toy problems' features and decision boundaries;
- :mod:`.selection`: a metric against a swept setting (notebook 07's grids).
"""
from .common import (FIGURE_FORMATS, plot_curve_grid, plot_method_curves, plot_paired_differences, plot_schedules,
                     plot_seed_points, save_figure)
from .images import plot_blend_steps, plot_build_gap, plot_channel_histograms, plot_embeddings, plot_image_grid
from .toys import draw_decision_boundary, draw_feature_pca, plot_toy_modes, toy_mode_rows
from .adaptation import adaptation_references, plot_adaptation_curves, plot_loss_terms  # noqa: F401 (05, 06)
from .selection import plot_setting_sweep

__all__ = ["FIGURE_FORMATS", "save_figure", "plot_schedules", "plot_method_curves", "plot_curve_grid", "plot_seed_points",
           "plot_paired_differences", "plot_image_grid", "plot_blend_steps", "plot_build_gap", "plot_channel_histograms",
           "plot_embeddings", "draw_feature_pca", "draw_decision_boundary", "plot_toy_modes", "toy_mode_rows",
           "plot_setting_sweep"]
