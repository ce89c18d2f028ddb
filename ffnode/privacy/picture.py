"""The owner's picture of an audit: the samples most like a copy, each beside its nearest training image.

It shows real training images, so it is for the site's own people only: `ffnode audit --picture` writes it
where the operator says (never into the store) and nothing sends it anywhere.
"""

from __future__ import annotations

import numpy as np

from ffnode.data.images import image_grid

PAIRS_PER_ROW = 4


def closest_pairs(samples: np.ndarray, train: np.ndarray, closest: list[list], hflip: bool) -> np.ndarray:
    """A grid of (sample, nearest training image) pairs, a white gap after each, the smallest NN1/NN2 ratio
    first (left to right, then down). `closest` holds the
    audit's (sample index, training index, ratio) rows; with x-flip training the training image is shown in the
    orientation nearer the sample, as the audit measured it."""
    cells, gap = [], np.full(train.shape[1:], 255, np.uint8)
    for s, t, _ratio in closest:
        sample, real = samples[s].astype(np.float32), train[t]
        if hflip and np.sum((real[:, ::-1] - sample) ** 2) < np.sum((real.astype(np.float32) - sample) ** 2):
            real = real[:, ::-1]
        cells += [samples[s], real, gap]
    return image_grid(np.stack(cells), cols=3 * PAIRS_PER_ROW)
