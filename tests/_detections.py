"""Detections for tracker tests, written as rows."""

import numpy as np

from anonray.types import Detections


def detections_from_rows(rows: list[tuple[int, tuple[float, ...], float, int]]) -> Detections:
    """(frame, (x0, y0, x1, y1), score, class) rows as Detections."""
    return Detections(
        frame_index=np.array([r[0] for r in rows], np.int64),
        xyxy=np.array([r[1] for r in rows], np.float32).reshape(-1, 4),
        score=np.array([r[2] for r in rows], np.float32),
        cls=np.array([r[3] for r in rows], np.int64),
    )
