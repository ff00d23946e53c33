"""Scene cuts from tiny per-frame signatures, so tracks, gap filling and roll never cross a cut.

A signature is the frame shrunk to 4x4 RGB (48 bytes): too coarse to show anything of a person,
enough to tell a hard cut from a camera move.
"""

from __future__ import annotations

import cv2
import numpy as np

SIGNATURE_BYTES = 48


def frame_signature(image: np.ndarray) -> bytes:
    """48-byte signature of an RGB frame (area-averaged 4x4 thumbnail)."""
    return cv2.resize(image, (4, 4), interpolation=cv2.INTER_AREA).astype(np.uint8).tobytes()


def find_cuts(signatures: np.ndarray, threshold: float) -> np.ndarray:
    """First frame indices of new scenes: where the signature changes by more than ``threshold``
    (mean absolute difference, 0..255) from the previous frame. Rows of zeros (frames without a
    signature) never count as cuts."""
    if threshold <= 0 or len(signatures) < 2:
        return np.zeros(0, np.int64)
    sig = signatures.astype(np.float32)
    present = signatures.any(axis=1)
    change = np.abs(sig[1:] - sig[:-1]).mean(axis=1)
    is_cut = (change > threshold) & present[1:] & present[:-1]
    return (np.flatnonzero(is_cut) + 1).astype(np.int64)
