"""The frames int8 detection is calibrated on: the project's own synthetic scenes (``synthetic_scene.py``) at
the frame sizes detection sees, a few dimmed as night footage is. Never evaluation data.

Deterministic (no codec in between), so that the quantized networks made from them are the same bytes on
every machine and can be pinned (``detect/int8.py``; any change here bumps its ``INT8_RECIPE``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from anonray.synthetic_scene import make_scene

CALIBRATION_SIZES = ((1280, 720), (1024, 576), (720, 576), (480, 270), (720, 1280))
"""(width, height) of the calibration scenes: detection sizes of 1080p/720p, PAL SD, small CCTV and portrait."""

FRAMES_PER_SCENE = 4
SCENE_FRAMES = 48
DIM_FACTOR = 0.3
"""Luma factor of the dimmed copy of each scene's middle frame (dark footage's activations)."""


def calibration_frames() -> Iterator[np.ndarray]:
    """RGB uint8 frames: ``FRAMES_PER_SCENE`` spread over each scene, plus a dimmed copy of one."""
    step = SCENE_FRAMES // FRAMES_PER_SCENE
    for seed, (width, height) in enumerate(CALIBRATION_SIZES):
        scene = make_scene(width, height, SCENE_FRAMES, seed)
        for i in range(0, SCENE_FRAMES, step):
            frame = scene.frame(i)
            yield frame
            if i == step * (FRAMES_PER_SCENE // 2):
                yield (frame.astype(np.float32) * DIM_FACTOR).astype(np.uint8)
