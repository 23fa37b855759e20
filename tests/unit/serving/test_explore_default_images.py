"""`genloop serve` offers /explore the real images the loop wrote, without a flag."""
from __future__ import annotations

import numpy as np

from genloop.serving.command import default_explore_images


def test_the_explorers_default_images_are_the_held_out_split_clean_wrote(genloop_prepared_data):
    file = default_explore_images(genloop_prepared_data)
    with np.load(file) as split:
        assert split["images"].ndim >= 3 and len(split["images"]) > 0
