"""Plotting helpers: each returns a matplotlib figure (nothing is shown or saved behind the caller's back);
:func:`save_figure` writes one reproducibly (PNG and SVG)."""
from .adaptation import adaptation_references, plot_accuracy_seconds, plot_adaptation_curves, plot_loss_terms
from .common import (FIGURE_FORMATS, plot_curve_grid, plot_method_curves, plot_paired_differences, plot_schedules,
                     plot_seed_points, plot_setting_sweep, save_figure)
from .images import plot_blend_steps, plot_build_gap, plot_channel_histograms, plot_embeddings, plot_image_grid
from .toys import plot_toy_modes, plot_toy_problems, toy_mode_rows

__all__ = ["FIGURE_FORMATS", "save_figure", "plot_schedules", "plot_method_curves", "plot_curve_grid",
           "plot_seed_points", "plot_paired_differences", "plot_setting_sweep", "plot_image_grid", "plot_blend_steps",
           "plot_build_gap", "plot_channel_histograms", "plot_embeddings", "plot_toy_modes", "plot_toy_problems",
           "toy_mode_rows", "adaptation_references", "plot_adaptation_curves", "plot_loss_terms",
           "plot_accuracy_seconds"]
