"""Scene cuts from 4x4 signatures: hard cuts found, camera moves and missing frames ignored."""

import numpy as np

from anonray.track.scenes import SIGNATURE_BYTES, find_cuts, frame_signature


def test_cut_between_two_scenes_not_within_a_pan():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (90, 160, 3), np.uint8)
    b = rng.integers(0, 255, (90, 160, 3), np.uint8) // 3
    frames = [np.roll(a, 2 * i, axis=1) for i in range(5)] + [np.roll(b, 2 * i, axis=1) for i in range(5)]
    signatures = np.stack([np.frombuffer(frame_signature(f), np.uint8) for f in frames])
    assert signatures.shape == (10, SIGNATURE_BYTES)
    assert find_cuts(signatures, 30.0).tolist() == [5]


def test_missing_signatures_and_threshold_zero():
    signatures = np.zeros((4, SIGNATURE_BYTES), np.uint8)
    signatures[2] = 200
    assert find_cuts(signatures, 30.0).tolist() == []
    signatures[:] = 10
    signatures[2:] = 200
    assert find_cuts(signatures, 0.0).tolist() == []
    assert find_cuts(signatures, 30.0).tolist() == [2]
