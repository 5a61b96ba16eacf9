from __future__ import annotations

import numpy as np
import pytest


def make_position_images(num_crops: int, width: int = 100, height: int = 200) -> np.ndarray:
    """Crops whose pixels tell where they are: R = x, G = y, B = crop index."""
    ys, xs = np.mgrid[0:height, 0:width]
    images = np.empty((num_crops, height, width, 3), dtype=np.uint8)
    images[..., 0] = xs
    images[..., 1] = ys
    images[..., 2] = (np.arange(num_crops) % 256)[:, None, None]
    return images


@pytest.fixture
def position_images():
    return make_position_images


@pytest.fixture
def random_images():
    def make(num_crops: int, width: int = 100, height: int = 200, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, (num_crops, height, width, 3), dtype=np.uint8)

    return make
