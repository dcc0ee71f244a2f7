"""The image grids every experiment draws (one Axes per grid: nnjax.plots.common.tiled_figure)."""

import numpy as np
import pytest

from nnjax.plots.common import tiled_figure
from nnjax.plots.mnist import feature_maps_figure, filters_figure


def test_tiles_on_their_own_range_or_one_shared_scale():
    low, high = np.zeros((4, 4)), np.full((4, 4), 10.0)
    high[0, 0] = 20.0
    fig = tiled_figure([low, high], ["a", "b"], ncols=2, cmap="gray")
    canvas = fig.axes[0].images[0].get_array()
    assert np.nanmax(canvas) == 1.0 and np.nanmin(canvas) == 0.0  # each tile scaled to [0, 1] by itself
    assert np.ma.is_masked(canvas)  # the gaps between tiles are blank (NaN, drawn white)
    maps = np.random.default_rng(0).normal(size=(6, 6, 3))
    shared = feature_maps_figure(maps, scale="shared")
    image = shared.axes[0].images[0]
    assert image.norm.vmin == -np.abs(maps).max() and image.norm.vmax == np.abs(maps).max()
    assert len(shared.axes) == 2  # the grid and its colour bar
    assert [t.get_text() for t in filters_figure(np.zeros((3, 3, 1, 5))).axes[0].texts] == ["0", "1", "2", "3", "4"]


def test_tiles_of_different_sizes_are_centred_and_bad_shapes_are_refused():
    fig = tiled_figure([np.ones((4, 4, 3)), np.ones((2, 6, 3), np.float32)], ["x", "y"], ncols=1)
    canvas = fig.axes[0].images[0].get_array()
    assert canvas.shape[1] == 6 and canvas.shape[2] == 3
    with pytest.raises(ValueError, match="one title per image"):
        tiled_figure([np.ones((2, 2))], [])
    with pytest.raises(ValueError, match=r"\[H, W\] or \[H, W, 3\] alike"):
        tiled_figure([np.ones((2, 2)), np.ones((2, 2, 3))], ["a", "b"])
