"""Synthetic scenes: a scrolling photo (no people) with a planted face photo and a rendered licence plate.

The project's own footage: the test and demo clips (``anonray.testing.samples`` encodes them) and the frames
int8 detection is calibrated on (``detect/calibration.py``), so that nothing is tuned on evaluation data.
The face is a crop of the astronaut photo that ships with scikit-image; the background is its coffee cup photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from anonray.decode.orientation import boxes_to_stored, display_size, quarter_turns

FACE_CROP_SIZE = (170, 150)
"""(height, width) of the astronaut crop pasted into sample footage."""
FACE_IN_CROP = (32, 40, 122, 160)
"""The face itself inside that crop (xyxy): brow to chin, ear to ear."""


def face_crop() -> np.ndarray:
    """The astronaut's face with a little hair and collar (RGB, 150x170)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[20:190, 148:298])


def background_photo(width: int, height: int, travel: int) -> np.ndarray:
    """A photo (no people) scaled to cover the frame plus the scroll travel."""
    from skimage import data

    photo = data.coffee()
    scale = max((width + travel) / photo.shape[1], height / photo.shape[0])
    out = cv2.resize(photo, (math.ceil(photo.shape[1] * scale), math.ceil(photo.shape[0] * scale)))
    return np.ascontiguousarray(out[:height])


def render_plate(
    text: str = "AB12 CDE", size: tuple[int, int] = (180, 45), yellow: bool = False
) -> np.ndarray:
    """A licence plate: white or yellow rectangle, black border and characters (RGB)."""
    w, h = size
    plate = np.full((h, w, 3), (250, 210, 20) if yellow else (245, 245, 245), np.uint8)
    cv2.rectangle(plate, (1, 1), (w - 2, h - 2), (0, 0, 0), 2)
    scale = h / 34.0
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 2)
    fit = min(1.0, (w - 12) / tw)
    scale *= fit
    tw, th = int(tw * fit), int(th * fit)
    org = ((w - tw) // 2, (h + th) // 2)
    cv2.putText(plate, text, org, cv2.FONT_HERSHEY_DUPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
    return plate


@dataclass
class Scene:
    width: int
    height: int
    frames: int
    background: np.ndarray
    face: np.ndarray
    plate: np.ndarray
    face_start: tuple[int, int]
    plate_start: tuple[int, int]
    rotation: int = 0
    """Display rotation: the scene is composed upright and stored turned back by this angle."""

    def boxes(self, i: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """Face and plate boxes (xyxy, stored-frame pixels) in frame i."""
        stored_w, stored_h = display_size(self.width, self.height, self.rotation)
        upright = np.array(self.upright_boxes(i), np.float32)
        stored = boxes_to_stored(upright, self.rotation, stored_w, stored_h).astype(int)
        return tuple(stored[0].tolist()), tuple(stored[1].tolist())

    def frame(self, i: int) -> np.ndarray:
        """Frame i as stored: the upright picture turned back by the display rotation."""
        return np.ascontiguousarray(np.rot90(self.upright_frame(i), -quarter_turns(self.rotation)))

    def upright_boxes(self, i: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """Face and plate boxes (xyxy) in upright frame i: slow drift, bounded to the frame.

        The face box is the face itself (brow to chin, ear to ear), not the pasted photo around it.
        """
        fx, fy, _, _ = self.face_paste(i)
        fh, fw = self.face.shape[:2]
        x0, y0, x1, y1 = FACE_IN_CROP
        crop_h, crop_w = FACE_CROP_SIZE
        face = (fx + round(x0 * fw / crop_w), fy + round(y0 * fh / crop_h),
                fx + round(x1 * fw / crop_w), fy + round(y1 * fh / crop_h))
        ph, pw = self.plate.shape[:2]
        px = max(self.plate_start[0] - i, 0)
        py = self.plate_start[1]
        return face, (px, py, px + pw, py + ph)

    def face_paste(self, i: int) -> tuple[int, int, int, int]:
        """Where the face photo (with hair and collar) is pasted in upright frame i."""
        fh, fw = self.face.shape[:2]
        fx = min(self.face_start[0] + i, self.width - fw)
        fy = min(self.face_start[1] + i // 3, self.height - fh)
        return fx, fy, fx + fw, fy + fh

    def upright_frame(self, i: int) -> np.ndarray:
        img = self.background[:, i * 2 : i * 2 + self.width].copy()
        fx0, fy0, fx1, fy1 = self.face_paste(i)
        _, (px0, py0, px1, py1) = self.upright_boxes(i)
        img[fy0:fy1, fx0:fx1] = self.face
        img[py0:py1, px0:px1] = self.plate
        return img


def make_scene(width: int, height: int, frames: int, seed: int, rotation: int = 0) -> Scene:
    """A scene composed upright for a stored width x height shown with ``rotation``."""
    width, height = display_size(width, height, rotation)
    rng = np.random.default_rng(seed)
    face_side = int(np.clip(height * 0.4, 96, 160))
    crop = face_crop()
    face_w = round(face_side * crop.shape[1] / crop.shape[0])
    face = cv2.resize(crop, (face_w, face_side), interpolation=cv2.INTER_AREA)
    plate_w = int(np.clip(width * 0.4, 120, 180))
    plate = render_plate("AB12 CDE", (plate_w, round(plate_w / 4)), yellow=bool(rng.integers(2)))
    face_start = (
        int(rng.integers(4, max(5, width // 2 - face_w))),
        int(rng.integers(4, max(5, height // 8))),
    )
    plate_y_lo = min(face_start[1] + face_side + 4, height - plate.shape[0] - 4)
    plate_start = (
        int(rng.integers(width // 2, max(width // 2 + 1, width - plate_w - 4))),
        int(rng.integers(plate_y_lo, max(plate_y_lo + 1, height - plate.shape[0] - 2))),
    )
    return Scene(
        width, height, frames, background_photo(width, height, frames * 2), face, plate, face_start, plate_start,
        rotation,
    )
