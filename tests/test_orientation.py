"""Boxes found on the upright picture map back onto the stored frame exactly."""

import numpy as np
import pytest

from anonray.decode.orientation import boxes_to_stored, display_size, to_display


@pytest.mark.parametrize("rotation", [0, 90, -90, 180, 270, -180])
def test_box_round_trip_through_rotation(rotation):
    stored = np.zeros((60, 100, 3), np.uint8)
    stored[10:20, 30:70] = 255  # x 30..70, y 10..20 in stored pixels
    upright = to_display(stored, rotation)
    assert upright.shape[1::-1] == display_size(100, 60, rotation)
    ys, xs = np.nonzero(upright[..., 0])
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    np.testing.assert_allclose(boxes_to_stored(found, rotation, 100, 60)[0], [30, 10, 70, 20])
