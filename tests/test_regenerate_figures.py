"""save_figure writes byte-reproducible figures: the same figure saved twice (into two
folders, so nothing is cached) gives identical PNG and SVG bytes, with no date in them."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dannlib.plotting import save_figure  # noqa: E402


def _figure():
    fig, axes = plt.subplots(1, 2, figsize=(4, 2))
    x = np.linspace(0, 1, 50)
    axes[0].plot(x, x ** 2, label="x^2")
    axes[0].legend()
    axes[1].imshow(np.arange(64).reshape(8, 8), cmap="viridis")  # clip paths and an embedded image
    axes[1].set_title("image")
    return fig


def test_the_same_figure_saves_to_identical_bytes(tmp_path):
    fig = _figure()
    try:
        first = save_figure(fig, tmp_path / "a", "00_test", "fig")
        second = save_figure(fig, tmp_path / "b", "00_test", "fig")
    finally:
        plt.close(fig)
    assert [p.suffix for p in first] == [".png", ".svg"]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between two saves"
    svg = first[1].read_text()
    assert "<dc:date>" not in svg and "clipPath" in svg  # ids present, yet stable
    assert b"Software" not in first[0].read_bytes()[:4096]


def test_a_fresh_figure_in_another_process_state_saves_the_same(tmp_path):
    # Different random state and salt default must not matter: two separately built figures.
    np.random.seed(1)
    a = _figure()
    np.random.seed(2)
    b = _figure()
    try:
        pa = save_figure(a, tmp_path / "a", "00_test", "fig", formats=("svg",))[0]
        pb = save_figure(b, tmp_path / "b", "00_test", "fig", formats=("svg",))[0]
    finally:
        plt.close(a)
        plt.close(b)
    assert pa.read_bytes() == pb.read_bytes()
