"""benchmarks/accuracy/sweep.py: strides replayed as the pipeline runs them (low-light looks on dark frames)."""

import numpy as np

from anonray.config import Config
from anonray.types import Detections
from benchmarks.accuracy.sweep import dark_frames, score_setting

BOX = [40.0, 40.0, 80.0, 60.0]


def _signatures(lumas: list[int]) -> np.ndarray:
    return np.stack([np.full(48, v, np.uint8) for v in lumas])


def test_dark_frames_from_signatures() -> None:
    assert dark_frames(_signatures([10, 49, 50, 200]), 50.0).tolist() == [True, True, False, False]


def test_plate_stride_keeps_the_low_light_looks_on_dark_frames() -> None:
    """A plate found on frames 0-5 (frame 0 and 3 are stride frames); frames 4 and 5 are dark. With plate
    tracking off, only the stride frames and the dark frames are masked; without a low-light model only the
    stride frames."""
    n = 6
    dets = Detections(np.arange(n), np.tile(np.asarray(BOX, np.float32), (n, 1)), np.full(n, 0.9, np.float32),
                      np.ones(n, np.int64))
    truth = [[{"object": "0:0", "cls": "plate", "box": BOX, "ignore": False}] for _ in range(n)]
    off = {"tracking.plate.max_gap": 0, "tracking.plate.pre_roll": 0, "tracking.plate.post_roll": 0,
           "classes": ["plate"]}
    signatures = _signatures([120, 120, 120, 120, 20, 20])
    scores, _, _ = score_setting(Config().with_overrides(**off), dets, signatures, (128, 96), truth)
    assert (scores["plate"].object_frames, scores["plate"].missed) == (6, 2)  # frames 1 and 2
    no_dark_look = Config().with_overrides(**off, **{"detection.plate.low_light_model": None})
    scores, _, _ = score_setting(no_dark_look, dets, signatures, (128, 96), truth)
    assert scores["plate"].missed == 4  # frames 1, 2, 4 and 5
